"""A dataset whose class folders come in another order than the model's classes is matched by name
(issue 11): the demo VGG, right on ~every phantom image, must not look wrong on the same images."""
import numpy as np

from app_pages import open_page
from nnsens_core.data import ImageData
from nnsens_core.demos import load_demo_cnn
from nnsens_core.phantom import demo_images


def test_reversed_class_folders_are_matched_to_the_model_by_name():
    names = load_demo_cnn("vgg16-phantom").spec.class_names
    d = demo_images("test", n=30)
    assert tuple(d.class_names) == tuple(names)
    rev = tuple(reversed(names))               # e.g. the sorted folder names of a ZIP
    relabel = np.asarray([rev.index(c) for c in names])
    zipped = ImageData(d.images, relabel[d.labels], rev, None, "reversed.zip")
    uploads = {"tabular_data": {}, "tabular_model": {}, "image_data": {"reversed.zip": zipped},
               "image_model": {}}
    at = open_page("pages/saliency.py", state={"uploads": uploads, "sel_image_data": "reversed.zip"})
    at.radio(key="sal_correct").set_value("incorrect")
    at.run()
    assert not at.exception, at.exception
    assert any("No image matches the filter" in w.value for w in at.warning), \
        [w.value for w in at.warning]


def test_classes_without_matching_names_are_matched_by_hand():
    names = load_demo_cnn("vgg16-phantom").spec.class_names
    d = demo_images("test", n=30)
    folders = ("class_a", "class_b", "class_c")   # e.g. a ZIP with folders named otherwise
    renamed = ImageData(d.images, d.labels, folders, None, "renamed.zip")
    uploads = {"tabular_data": {}, "tabular_model": {}, "image_data": {"renamed.zip": renamed},
               "image_model": {}}
    at = open_page("pages/saliency.py", state={"uploads": uploads, "sel_image_data": "renamed.zip"})
    assert any("do not match the model's" in w.value for w in at.warning)
    # until the classes are matched the page stops: no prediction named with the folder names
    assert not any(m.key.startswith("sal_filter|") for m in at.multiselect)
    key = next(s.key for s in at.selectbox if s.key.startswith("class_map|"))
    prefix = key.rsplit("|", 1)[0]
    # the defaults are a one-to-one matching (one model class per folder, in order)
    assert [at.selectbox(key=f"{prefix}|{f}").value for f in folders] == list(names)
    for folder, name in zip(folders, names):
        at.selectbox(key=f"{prefix}|{folder}").set_value(name)
    at.button(key=f"class_map_apply|{prefix.split('|', 1)[1]}").click()
    at.run()
    assert not at.exception, at.exception
    assert not any("do not match the model's" in w.value for w in at.warning)
    for _ in range(2):  # the class filter offers the model's classes, all selected, on every rerun
        (flt,) = [m for m in at.multiselect if m.key.startswith("sal_filter|")]
        assert list(flt.options) == list(names) and len(flt.value) == 3
        at.run()
    at.radio(key="sal_correct").set_value("incorrect")
    at.run()
    assert any("No image matches the filter" in w.value for w in at.warning), \
        [w.value for w in at.warning]
