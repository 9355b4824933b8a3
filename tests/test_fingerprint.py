"""Content fingerprints (what the dashboard's shared caches are keyed by)."""
import numpy as np
import pytest
import torch

from nnsens_core.data import TabularData, load_pima
from nnsens_core.errors import NnsensError
from nnsens_core.fingerprint import fingerprint
from nnsens_core.zoo import PaperMLP


def test_equal_content_equal_fingerprint_any_change_differs():
    torch.manual_seed(0)
    a = PaperMLP(8, 10).eval()
    b = PaperMLP(8, 10).eval()
    b.load_state_dict(a.state_dict())
    assert fingerprint(a) == fingerprint(b)
    with torch.no_grad():
        b.fc1.weight[0, 0] += 1e-6
    assert fingerprint(a) != fingerprint(b)
    b.load_state_dict(a.state_dict())
    b.bn1.running_mean[0] = 0.5  # buffers count too
    assert fingerprint(a) != fingerprint(b)


def test_datasets_rows_dtypes_and_names_count():
    d = load_pima()
    assert fingerprint(d) == fingerprint(load_pima())
    assert fingerprint(d) != fingerprint(d.rows("0:500"))
    renamed = TabularData(d.X, d.y, tuple(reversed(d.feature_names)), d.target_name, d.name)
    assert fingerprint(renamed) != fingerprint(d)
    x = np.arange(6, dtype=np.float32)
    assert fingerprint(x) != fingerprint(x.astype(np.float64)) != fingerprint(x.reshape(2, 3))
    assert fingerprint(b"abc") != fingerprint(b"abd")
    assert fingerprint(torch.tensor(3)) == fingerprint(torch.tensor(3))


def test_text_arrays_count_and_other_objects_are_refused():
    yes = np.array(["yes", "no"], dtype=object)
    assert fingerprint(yes) == fingerprint(np.array(["yes", "no"], dtype=object))
    assert fingerprint(yes) != fingerprint(np.array(["no", "yes"], dtype=object))
    with pytest.raises(NnsensError, match="holding object objects"):
        fingerprint(np.array([object()], dtype=object))


def test_an_attached_atlas_changes_the_dataset_fingerprint():
    """The Model & data page registers volumes with an atlas attached as a new upload: its content
    id must differ from the volumes without it, and follow the atlas's labels and names."""
    import dataclasses

    from nnsens_core.brain_phantom import atlas, demo_volumes
    from nnsens_core.volumes import Atlas

    d = dataclasses.replace(demo_volumes("test", n=2), atlas=None)
    a = atlas(48)
    with_atlas = dataclasses.replace(d, atlas=a)
    assert fingerprint(with_atlas) != fingerprint(d)
    same = dataclasses.replace(d, atlas=Atlas(a.labels.copy(), dict(a.names)))
    assert fingerprint(same) == fingerprint(with_atlas)
    renamed = dataclasses.replace(d, atlas=Atlas(a.labels, {**a.names, 1: "another name"}))
    assert fingerprint(renamed) != fingerprint(with_atlas)
    labels = a.labels.copy()
    labels[0, 0, 0] = 1 if labels[0, 0, 0] != 1 else 2
    assert fingerprint(dataclasses.replace(d, atlas=Atlas(labels, a.names))) != \
        fingerprint(with_atlas)
