"""Model & data's "Train a CNN" on a grouped image set kept at its original sizes: a non-square
grey input with a centre-crop recipe, groups from the file names, weighted balancing and
augmentation; the test metrics and confusion matrix are shown, the model is registered with its
recipe, and the manifest download reloads it."""
import json

import numpy as np
from app_pages import open_page

from nnsens_core.data import ImageData
from nnsens_core.phantom import make_phantom
from ui.widgets import EXPORTS

PAGE = "pages/model_data.py"


def _errors(at):
    """Errors of the page but the sidebar pairing's note that the selected CNN takes another input
    size than the dataset's current images (until the pages rebuild the images per model recipe)."""
    return [e.value for e in at.error if not e.value.startswith("The CNN '")]


def _grouped_originals():
    """27 phantom frames (3 classes x 3 clips x 3 frames) at 40x56, with file names and no groups
    (the section takes them from the names)."""
    d = make_phantom(27, size=48, seed=0, channels=1)
    originals, files = [], []
    for i in range(len(d)):
        c = int(d.labels[i])
        j = int((d.labels[:i] == c).sum())
        originals.append(np.ascontiguousarray(d.images[i][:, 4:44, :].repeat(2, axis=2)[:, :, :56]))
        files.append(f"{d.class_names[c]}/{d.class_names[c]}clip{j // 3}_f{j % 3:03d}.png")
    return ImageData(d.images, d.labels, d.class_names, name="frames", originals=tuple(originals),
                     files=tuple(files))


def test_train_with_groups_recipe_and_test_split():
    data = _grouped_originals()
    uploads = {"tabular_data": {}, "tabular_model": {}, "image_data": {"frames": data},
               "image_model": {}}
    at = open_page(PAGE, state={"uploads": uploads, "sel_image_data": "frames"})
    assert at.selectbox(key="tr_groups|frames").value == "names"
    at.selectbox(key="tr_arch_2").set_value("resnet18-small")
    at.selectbox(key="tr_channels").set_value(1)
    at.selectbox(key="tr_resize").set_value("crop")
    at.selectbox(key="tr_balance").set_value("weights")
    for key, value in {"tr_width2": 0.05, "tr_h": 32, "tr_w": 40, "tr_epochs": 1, "tr_batch": 4,
                       "tr_test": 0.3, "tr_val": 0.3}.items():
        at.number_input(key=key).set_value(value)
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any("9 for 27 images" in c.value for c in at.caption)  # nine clips
    at.button(key="btn_train_cnn").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    label = "resnet18-small on frames"
    spec = at.session_state["uploads"]["image_model"][label].spec
    assert spec.input_shape == (1, 32, 40) and spec.resize == "crop"
    assert spec.class_names == data.class_names
    run = at.session_state["cnn_trained"][label]
    assert run["groups"] == {"train": 3, "val": 3, "test": 3}  # one clip per class each, none twice
    assert run["confusion"].shape == (3, 3) and run["confusion"].sum() == run["n_test"] > 0
    assert {"Test accuracy", "Test balanced accuracy"} <= {m.label for m in at.metric}
    assert len(at.get("plotly_chart")) == 2  # history + confusion matrix
    manifest = json.loads(at.session_state[EXPORTS]["dl_cnn_manifest"])
    (entry,) = manifest.values()
    assert entry["resize"] == "crop" and entry["input_shape"] == [1, 32, 40]
    assert entry["balance"] == "weights" and entry["augment"] is True
