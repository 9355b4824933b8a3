"""A trained CNN's manifest entry (nnsens_core.model_manifest) reloads it with load_model: same
outputs, classes, input shape and normalisation; bad entries give one message naming the field."""
import io
import json

import pytest
import torch

from nnsens_core.errors import NnsensError
from nnsens_core.loading import load_model
from nnsens_core.model_manifest import manifest_entry, spec_from_manifest
from nnsens_core.zoo import IMAGE, ModelSpec, build


def _trained(arch, shape, **kw):
    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "in_channels": shape[0], **kw}
    module = build(arch, **kwargs).eval()
    spec = ModelSpec(name="m", arch=arch, task=IMAGE, input_shape=shape, class_names=("a", "b"),
                     mean=(0.5,) * shape[0], std=(0.25,) * shape[0], arch_kwargs=kwargs)
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return module, spec, buf.getvalue()


@pytest.mark.parametrize("arch, shape, kw", [("cnn3d-small", (1, 8, 8, 8), {"width": 2, "blocks": 2}),
                                             ("vgg16-small", (3, 32, 32), {"width": 0.05}),
                                             ("resnet18-small", (1, 16, 16), {"width": 0.05})])
def test_entry_round_trip_reloads_the_same_model(arch, shape, kw):
    module, spec, weights = _trained(arch, shape, **kw)
    entry = manifest_entry(spec, "m.pt", balanced_accuracy=0.75)
    text = json.dumps({"my model": entry})          # as the dashboard's download
    back = spec_from_manifest(text.encode(), file_name="m.pt", name="m.pt")
    assert back.input_shape == shape and back.class_names == ("a", "b")
    assert back.mean == spec.mean and back.std == spec.std and back.arch == arch
    lm = load_model(weights, arch=back.arch, arch_kwargs=back.arch_kwargs, spec=back)
    x = torch.rand(2, *shape)
    torch.testing.assert_close(lm.module(back.normalize(x)), module(spec.normalize(x)))
    assert spec_from_manifest(entry).input_shape == shape  # a bare entry works too


def test_shipped_manifest_entries_are_accepted():
    from nnsens_core.demos import manifest
    for name, e in manifest().items():
        spec = spec_from_manifest(json.dumps(manifest()), file_name=e["file"])
        assert spec.name == name and list(spec.input_shape) == e["input_shape"]


@pytest.mark.parametrize("change, words", [
    ({"arch": "paper-mlp"}, "not an image architecture"),
    ({"input_shape": [1, 8, 8, 8]}, "takes images"),
    ({"input_shape": [3, 32]}, "input_shape"),
    ({"class_names": ["only"]}, "class_names"),
    ({"mean": [0.5]}, "1 value(s) for 3 input channel(s)"),
    ({"std": [0.0, 1.0, 1.0]}, "std"),
    ({"arch_kwargs": {"num_classes": 5}}, "num_classes=5 but 2 class_names"),
    ({"arch_kwargs": {"width": "x"}}, "arch_kwargs"),
])
def test_bad_entries_name_the_field(change, words):
    _, spec, _ = _trained("vgg16-small", (3, 32, 32), width=0.05)
    entry = {**manifest_entry(spec, "m.pt"), **change}
    with pytest.raises(NnsensError, match=words.replace("(", r"\(").replace(")", r"\)")):
        spec_from_manifest(entry)


def test_not_json_several_models_and_missing_fields():
    with pytest.raises(NnsensError, match="not valid JSON"):
        spec_from_manifest(b"{nope")
    with pytest.raises(NnsensError, match="lacks input_shape, class_names"):
        spec_from_manifest({"arch": "vgg16-small"})
    _, spec, _ = _trained("vgg16-small", (3, 32, 32), width=0.05)
    two = {"a": manifest_entry(spec, "a.pt"), "b": manifest_entry(spec, "b.pt")}
    assert spec_from_manifest(two, file_name="b.pt").name == "b"
    with pytest.raises(NnsensError, match="describes 2 models"):
        spec_from_manifest(two, file_name="c.pt")
    with pytest.raises(NnsensError, match="1 MiB"):
        spec_from_manifest(b" " * (2 << 20))
