"""Model & data with 3-D volumes (issue 12): the images tab shows middle slices with masks and the
atlas, a ZIP of NIfTI class folders and an atlas upload register volume datasets, and a CNN trained
on the selected dataset is registered as a model the other pages accept (and reloads from its
weights + manifest downloads)."""
import numpy as np
import torch

from app_pages import open_page
from nnsens_core.data import ImageData
from nnsens_core.volumes import save_nifti
from tests.uploads import zip_bytes
from ui import state
from ui.widgets import EXPORTS

PAGE = "pages/model_data.py"


def _errors(at):
    return [e.value for e in at.error]


def _upload(at, key, name, blob, mime="application/octet-stream"):
    at.file_uploader(key=key).set_value((name, blob, mime))
    at.run()


def _tiny_volumes(n_per_class=6, side=8, seed=0):
    """Two classes told apart by a bright cube in one half of the volume."""
    rng = np.random.default_rng(seed)
    vols, labels = [], []
    for k in range(2):
        for _ in range(n_per_class):
            v = rng.uniform(0, 0.3, (1, side, side, side)).astype(np.float32)
            v[0, :side // 2] += 0.6 if k else 0.0
            vols.append(v)
            labels.append(k)
    return ImageData(np.stack(vols), np.asarray(labels), ("healthy", "ill"), name="tiny volumes")


def test_brain_demo_shows_middle_slices_masks_and_atlas():
    at = open_page(PAGE, state={"sel_image_data": state.DEMO_BRAIN,
                                "sel_image_model": "Demo: cnn3d-brain"})
    assert not _errors(at), _errors(at)
    images = at.get("image")
    assert len(images) == 12  # 2 volumes per class x 2 classes x 3 axes
    captions = [c.value for c in at.caption]
    assert any("(1, 48, 48, 48) (C, D, H, W)" in c for c in captions), captions
    assert any(c.startswith("Atlas: 14 regions") and "left hippocampus" in c for c in captions)
    assert any(m.label == "CNN" and m.value == "cnn3d-small" for m in at.metric)
    assert at.toggle(key="md_masks").value  # the phantom has ground-truth masks


def _nifti_zip():
    d = _tiny_volumes(3)
    return zip_bytes({f"scans/{d.class_names[y]}/s{i}.nii.gz": save_nifti(v, compress=True)
                      for i, (v, y) in enumerate(zip(d.images, d.labels))})


def test_volume_zip_then_atlas_upload():
    at = open_page(PAGE)
    _upload(at, "up_img", "vols.zip", _nifti_zip(), "application/zip")
    at.button(key="btn_img").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert at.session_state["sel_image_data"] == "vols.zip"
    vols = at.session_state["uploads"]["image_data"]["vols.zip"]
    assert vols.images.shape == (6, 1, 8, 8, 8) and vols.class_names == ("healthy", "ill")
    assert "Loaded vols.zip: 6 volumes of shape (1, 8, 8, 8)" in at.success[0].value
    # the selected 2-D demo CNN does not fit them (its classes differ), yet the volumes are shown
    assert any(m.label == "CNN" and m.value == "—" for m in at.metric)
    assert len(at.get("image")) == 12

    wrong = np.zeros((8, 8, 7), np.int16)
    _upload(at, "up_atlas", "wrong.nii.gz", save_nifti(wrong, compress=True))
    at.button(key="btn_atlas").click().run()
    errors = _errors(at)
    assert len(errors) == 1 and "the atlas has shape (8, 8, 7)" in errors[0], errors
    assert at.session_state["sel_image_data"] == "vols.zip"

    series = np.zeros((8, 8, 8, 2), np.float32)  # a 4-D NIfTI (two volumes)
    _upload(at, "up_atlas", "series.nii", _nifti_4d(series))
    at.button(key="btn_atlas").click().run()
    assert any("4-D NIfTI" in e for e in _errors(at)), _errors(at)

    labels = np.zeros((8, 8, 8), np.int16)
    labels[:, :, :4], labels[:, :, 4:] = 1, 2
    _upload(at, "up_atlas", "atlas.nii.gz", save_nifti(labels, compress=True))
    _upload(at, "up_atlas_names", "names.csv", b"label,name\n1,left side\n2,right side\n", "text/csv")
    at.button(key="btn_atlas").click().run()
    assert not at.exception
    label = "vols.zip + atlas atlas.nii.gz"
    assert at.session_state["sel_image_data"] == label
    with_atlas = at.session_state["uploads"]["image_data"][label]
    assert with_atlas.atlas.region_names == {1: "left side", 2: "right side"}
    ids = at.session_state["upload_ids"]["image_data"]
    assert ids[label] != ids["vols.zip"]
    assert any(c.value.startswith("Atlas: 2 regions: left side, right side") for c in at.caption)


def _nifti_4d(a):
    import nibabel as nib
    return nib.Nifti1Image(a, np.eye(4)).to_bytes()


def _train(at, **settings):
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    at.run()
    assert sum(c.value.startswith("Estimated cost") for c in at.caption) == 2  # MLP + CNN
    at.button(key="btn_train_cnn").click().run()
    assert not at.exception, at.exception


def test_train_cnn3d_on_volumes_registers_a_usable_model_that_reloads():
    data = _tiny_volumes(6)
    uploads = {"tabular_data": {}, "tabular_model": {}, "image_data": {"tiny": data},
               "image_model": {}}
    at = open_page(PAGE, state={"uploads": uploads, "sel_image_data": "tiny"})
    assert at.selectbox(key="tr_arch_3").options == ["cnn3d-small"]
    _train(at, tr_width3=2, tr_epochs=2, tr_batch=4, tr_val=0.25, tr_test=0.0)
    label = "cnn3d-small on tiny"
    assert at.session_state["sel_image_model"] == label
    model = at.session_state["uploads"]["image_model"][label]
    spec = model.spec
    assert spec.input_shape == (1, 8, 8, 8) and spec.class_names == ("healthy", "ill")
    assert spec.mean == (0.5,) and spec.std == (0.25,)
    # state.images(volumes=True) takes the pair: no error, the CNN metric names the new model
    assert not _errors(at), _errors(at)
    assert any(m.label == "CNN" and m.value == "cnn3d-small" for m in at.metric)
    assert at.success and label in at.success[0].value
    run = at.session_state["cnn_trained"][label]
    assert run["epochs_run"] == 2 and len(run["frame"]) == 2 and 1 <= run["best_epoch"] <= 2
    assert run["n_val"] == 3 and run["n_train"] == 9  # a stratified quarter held out
    assert 0.0 <= run["bacc"] <= 1.0
    assert any(m.label == "Validation balanced accuracy" for m in at.metric)
    assert len(at.get("plotly_chart")) == 1

    # reload through Add a CNN from the two downloads: same classes, shape, outputs
    manifest = at.session_state[EXPORTS]["dl_cnn_manifest"]
    _upload(at, "up_cnn", run["file"], run["weights"])
    _upload(at, "up_cnn_manifest", "m.json", manifest.encode(), "application/json")
    at.button(key="btn_cnn").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    back = at.session_state["uploads"]["image_model"][run["file"]]
    assert back.spec.input_shape == spec.input_shape and back.spec.class_names == spec.class_names
    x = spec.normalize(torch.as_tensor(data.images[:3]))
    torch.testing.assert_close(back.module(x), model.module.cpu()(x))


def test_train_vgg_on_the_2d_demo():
    at = open_page(PAGE)
    assert at.selectbox(key="tr_arch_2").options == ["vgg16-small", "resnet18-small", "vgg16",
                                                     "resnet18"]
    _train(at, tr_width2=0.03, tr_epochs=1, tr_batch=32)
    label = f"vgg16-small on {state.DEMO_PHANTOM}"
    assert at.session_state["sel_image_model"] == label
    spec = at.session_state["uploads"]["image_model"][label].spec
    assert spec.input_shape == (3, 64, 64) and spec.mean == (0.5,) * 3
    assert not _errors(at), _errors(at)
    assert any(m.label == "CNN" and m.value == "vgg16-small" for m in at.metric)
    assert at.session_state["cnn_trained"][label]["epochs_run"] == 1


def test_npz_of_volumes_with_an_atlas():
    from tests.uploads import npz_bytes
    d = _tiny_volumes(2)
    atlas = np.zeros((8, 8, 8), np.int32)
    atlas[:4], atlas[4:] = 1, 2
    blob = npz_bytes(images=d.images, labels=d.labels, class_names=np.asarray(d.class_names),
                     atlas=atlas, region_labels=np.asarray([1, 2]),
                     region_names=np.asarray(["upper", "lower"]))
    at = open_page(PAGE)
    _upload(at, "up_img", "vols.npz", blob)
    at.button(key="btn_img").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert at.session_state["sel_image_data"] == "vols.npz"
    assert "4 volumes of shape (1, 8, 8, 8)" in at.success[0].value
    assert "atlas of 2 regions" in at.success[0].value
    assert any(c.value.startswith("Atlas: 2 regions: upper, lower") for c in at.caption)
