import numpy as np
import pytest

from nnsens_core import data as nd
from nnsens_core.errors import NnsensError
from tests.uploads import npz_bytes, png_bytes, zip_bytes


def test_csv_text_column_is_named():
    csv = b"a,b,label\n1,x,0\n2,y,1\n"
    with pytest.raises(NnsensError, match="column 'b' is not numeric"):
        nd.load_csv(csv, "label")


def test_csv_nan_column_is_named_and_target_checked():
    csv = b"a,b,label\n1,,0\n2,3,1\n"
    with pytest.raises(NnsensError, match="column 'b' has 1 missing"):
        nd.load_csv(csv, "label")
    with pytest.raises(NnsensError, match="target column 'y' is not in the CSV"):
        nd.load_csv(b"a,b\n1,2\n", "y")
    with pytest.raises(NnsensError, match="not a readable CSV"):
        nd.load_csv(b"", "y")


def test_pima_loads_with_paper_rows(pima_path):
    d = nd.load_pima(pima_path)
    assert d.X.shape == (768, 8) and d.target_name == "Outcome"
    assert nd.demo_rows(d) == ("0:500", "500:700")
    b = d.rows("0:700").bounds()
    assert b.shape == (8, 2) and (b[:, 0] < b[:, 1]).all()


def test_breast_cancer_demo_loads_offline():
    d = nd.load_breast_cancer()
    assert d.X.shape == (569, 30)


def test_parse_rows():
    assert nd.parse_rows("0:500", 768) == slice(0, 500)
    assert nd.parse_rows(":10", 768) == slice(0, 10)
    for bad in ("abc", "5:2", "0:1000"):
        with pytest.raises(NnsensError, match="rows="):
            nd.parse_rows(bad, 768)


def _png(value: int, size=(10, 8)) -> bytes:
    return png_bytes(np.full((size[1], size[0], 3), value, np.uint8))


def test_image_zip_with_two_classes_resizes_and_labels():
    z = zip_bytes({"root/cats/a.png": _png(0), "root/cats/b.png": _png(255), "root/dogs/c.png": _png(128)})
    d = nd.load_image_zip(z, size=(16, 16), channels=3)
    assert d.images.shape == (3, 3, 16, 16) and d.class_names == ("cats", "dogs")
    assert list(d.labels) == [0, 0, 1]
    assert d.images.max() <= 1.0 and abs(d.images[1].mean() - 1.0) < 1e-6


def test_image_zip_with_one_class_or_bad_image_or_not_zip():
    with pytest.raises(NnsensError, match="at least two class"):
        nd.load_image_zip(zip_bytes({"cats/a.png": _png(0), "cats/b.png": _png(1)}))
    with pytest.raises(NnsensError, match="not a readable image"):
        nd.load_image_zip(zip_bytes({"a/x.png": b"garbage", "b/y.png": _png(1)}))
    with pytest.raises(NnsensError, match="not a ZIP"):
        nd.load_image_zip(b"plain text")


def test_image_folder(tmp_path):
    for cls, v in (("a", 10), ("b", 200)):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "1.png").write_bytes(_png(v))
    d = nd.load_image_folder(tmp_path, channels=1)
    assert d.images.shape == (2, 1, 8, 10)


def test_npz_images_tabular_and_pickle_refused():
    d = nd.load_npz(npz_bytes(images=np.zeros((4, 3, 8, 8), np.float32),
                              labels=np.array([0, 1, 0, 1]), masks=np.ones((4, 8, 8), bool)))
    assert isinstance(d, nd.ImageData) and d.masks.shape == (4, 8, 8)
    assert isinstance(nd.load_npz(npz_bytes(X=np.arange(6.0).reshape(3, 2), y=np.array([0, 1, 0]))),
                      nd.TabularData)
    with pytest.raises(NnsensError, match="pickled"):
        nd.load_npz(npz_bytes(X=np.array([{"evil": 1}], dtype=object), y=np.array([0])))
    with pytest.raises(NnsensError, match="images\\+labels"):
        nd.load_npz(npz_bytes(foo=np.zeros(2)))


def test_image_masks_must_match_images():
    with pytest.raises(NnsensError, match="masks have shape"):
        nd.ImageData(np.zeros((2, 3, 8, 8), np.float32), np.array([0, 1]), ("a", "b"),
                     masks=np.zeros((2, 4, 4), bool))


def test_classes_are_matched_to_the_model_by_name_never_by_position():
    from nnsens_core.data import ImageData, align_classes
    imgs = np.zeros((4, 1, 2, 2), np.float32)
    # a ZIP's folders come sorted: covid, pneumonia, regular; this model's order differs
    d = ImageData(imgs, np.array([0, 1, 2, 2]), ("covid", "pneumonia", "regular"))
    a, report = align_classes(d, ("Regular", "COVID", "pneumonia"))
    assert a.class_names == ("Regular", "COVID", "pneumonia")
    assert a.labels.tolist() == [1, 2, 0, 0]
    assert [a.class_names[k] for k in a.labels] == ["COVID", "pneumonia", "Regular", "Regular"]
    assert "covid -> COVID" in report
    same, report = align_classes(d, ("covid", "pneumonia", "regular"))
    assert same is d and report == ""
    with pytest.raises(NnsensError, match=r"do not match the model's \['0', '1', '2'\] by name"):
        align_classes(d, ("0", "1", "2"))
    # a mapping chosen by hand (e.g. a model loaded without class names)
    m, report = align_classes(d, ("0", "1", "2"), {"covid": "2", "pneumonia": "0", "regular": "1"})
    assert m.labels.tolist() == [2, 0, 1, 1] and m.class_names == ("0", "1", "2")
    assert report.startswith("classes matched to the model's by hand")
    with pytest.raises(NnsensError, match=r"names classes the model does not have"):
        align_classes(d, ("0", "1", "2"), {"covid": "7"})
