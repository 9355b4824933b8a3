"""Grouped splits, group ids from names / CSV, class balancing, ultrasound augmentation, ImageNet
initialisation and the trained model's manifest (nnsens_core.training)."""
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.loading import load_model
from nnsens_core.model_manifest import spec_from_manifest
from nnsens_core.phantom import make_phantom
from nnsens_core.preprocess import Recipe
from nnsens_core.training import (
    AugmentConfig,
    CNNTrainConfig,
    augment_images,
    class_weights,
    grouped_split,
    groups_from_csv,
    groups_from_names,
    init_from_imagenet,
    train_cnn,
    train_image_model,
)
from nnsens_core.zoo import build


def _grouped_phantom(n_per_class=12, frames=3, size=32, seed=0):
    """Phantom images with a clip id each: ``frames`` consecutive images of one class per clip."""
    d = make_phantom(3 * n_per_class, size=size, seed=seed, channels=1)
    groups = [None] * len(d)
    for c in range(len(d.class_names)):
        for j, i in enumerate(np.flatnonzero(d.labels == c)):
            groups[i] = f"{d.class_names[c]}_clip{j // frames}"
    return d, tuple(groups)


def _parts_of(groups, *parts):
    g = np.asarray(groups)
    return [set(g[p]) for p in parts]


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_never_leaks_and_stays_stratified(seed):
    rng = np.random.default_rng(seed)
    # 3 classes, 5-9 groups each of 1-6 frames, one mixed group (majority class 0)
    labels, groups = [], []
    for c in range(3):
        for k in range(int(rng.integers(5, 10))):
            m = int(rng.integers(1, 7))
            labels += [c] * m
            groups += [f"c{c}g{k}"] * m
    labels += [0, 0, 1]
    groups += ["mixed"] * 3
    labels, groups = np.asarray(labels), np.asarray(groups)
    tr, va, te = grouped_split(labels, groups, 0.2, 0.2, seed)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(labels)))
    gtr, gva, gte = _parts_of(groups, tr, va, te)
    assert not (gtr & gva or gtr & gte or gva & gte)
    for part in (tr, va, te):
        assert set(labels[part]) >= {0, 1, 2}  # every class in every part
    again = grouped_split(labels, groups, 0.2, 0.2, seed)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    # roughly the requested shares (groups are whole, so within one group's size per class)
    assert abs(len(te) / len(labels) - 0.2) < 0.12


def test_grouped_split_without_groups_is_by_image_and_errors_name_the_class():
    y = np.array([0] * 10 + [1] * 10)
    tr, va, te = grouped_split(y, None, 0.2, 0.2, 0)
    assert len(tr) == 12 and len(te) == 4 and len(va) == 4 and (y[te] == 1).sum() == 2
    groups = ["a"] * 10 + ["b", "b", "c", "c", "d", "d", "e", "e", "f", "f"]
    with pytest.raises(NnsensError, match="class 0 has 1 group"):
        grouped_split(y, groups, 0.2, 0.2, 0)
    _, va, te = grouped_split(y, ["a"] * 5 + ["z"] * 5 + groups[10:], 0.0, 0.3, 0)
    assert len(te) == 0 and set(np.asarray(groups)[va]) != set()
    with pytest.raises(NnsensError, match="one group per sample"):
        grouped_split(y, groups[:5])
    with pytest.raises(NnsensError, match="test_fraction"):
        grouped_split(y, None, 0.7, 0.1)


@pytest.mark.parametrize("seed", range(3))
def test_training_on_a_grouped_phantom_never_leaks_a_group(seed):
    d, groups = _grouped_phantom()
    cfg = CNNTrainConfig(epochs=1, batch_size=8, test_fraction=0.25, val_fraction=0.2, seed=seed)
    tm = train_image_model(d, "resnet18-small", cfg, recipe=Recipe((32, 32), 1, "stretch",
                                                                   (0.5,), (0.25,)),
                           width=0.05, groups=groups, device="cpu")
    rep = tm.report
    gtr, gva, gte = _parts_of(groups, rep.train_idx, rep.val_idx, rep.test_idx)
    assert gtr and gva and gte and not (gtr & gva or gtr & gte or gva & gte)
    assert rep.groups == {"train": len(gtr), "val": len(gva), "test": len(gte)}
    # the reported test metrics are the kept model's on the test images (independent recount)
    x = tm.spec.normalize(torch.as_tensor(d.images[rep.test_idx]))
    pred = tm.module(x).argmax(1).numpy()
    truth = d.labels[rep.test_idx]
    assert rep.test_accuracy == pytest.approx((pred == truth).mean())
    cm = np.zeros((3, 3), int)
    for t, p in zip(truth, pred):
        cm[t, p] += 1
    assert np.array_equal(rep.confusion, cm) and rep.confusion.sum() == len(rep.test_idx)
    doc = rep.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["confusion"]["class_names"] == list(d.class_names)


def test_given_indices_that_split_a_group_are_refused():
    d, groups = _grouped_phantom(4, 2)
    g = np.asarray(groups)
    same = np.flatnonzero(g == g[0])
    with pytest.raises(NnsensError, match="is in both"):
        train_cnn(build("resnet18-small", num_classes=3, in_channels=1, width=0.05), d,
                  CNNTrainConfig(epochs=1), train_idx=np.setdiff1d(np.arange(len(d)), same[1:]),
                  test_idx=same[1:], val_idx=[], groups=groups, device="cpu")


def test_groups_from_names_and_csv():
    files = ["covid/clip12_f003.png", "covid/clip12_f004.png", "reg/patient7-12.jpg",
             "reg/p3_frame9.png", "reg/single.png", "reg/scan_2_5.png"]
    assert groups_from_names(files) == ("clip12", "clip12", "patient7", "p3", "single", "scan_2")
    assert groups_from_names(files[:3], r"/(\w+?)\d*[_-]") == ("clip", "clip", "patient")
    with pytest.raises(NnsensError, match="does not match file 'reg/patient7-12.jpg'"):
        groups_from_names(files, r"clip(\d+)")
    with pytest.raises(NnsensError, match="not a regular expression"):
        groups_from_names(files, "(")
    d = ImageData(np.zeros((3, 1, 4, 4), np.float32), np.array([0, 0, 1]), ("a", "b"),
                  files=("a/x1.png", "a/x2.png", "b/y.png"))
    csv = b"file,group\na/x1.png,P1\nx2.png,P1\nb/y.png,P2\n"
    assert groups_from_csv(d, csv) == ("P1", "P1", "P2")
    with pytest.raises(NnsensError, match="no row for 1 of 3.*'b/y.png'"):
        groups_from_csv(d, b"file,group\na/x1.png,P1\na/x2.png,P1\n")
    with pytest.raises(NnsensError, match="no file names"):
        groups_from_csv(ImageData(d.images, d.labels, d.class_names), csv)


def test_class_weights_by_hand_and_the_weighted_loss_train_cnn_uses():
    w = class_weights([0, 0, 0, 1], 3)
    np.testing.assert_allclose(w, [4 / (2 * 3), 4 / (2 * 1), 0.0])  # n / (K_present * n_c)
    # one batch holding every training image: the first epoch's loss is the initial model's
    # weighted cross-entropy, sum_i w_yi ce_i / sum_i w_yi
    rng = np.random.default_rng(0)
    y = np.array([0] * 9 + [1] * 3)
    x = rng.uniform(0, 1, (12, 1, 4, 4)).astype(np.float32)
    data = ImageData(x, y, ("a", "b"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    logits = model(torch.as_tensor(x)).detach().numpy().astype(np.float64)
    ce = np.log(np.exp(logits).sum(1)) - logits[np.arange(12), y]
    wy = np.array([12 / (2 * 9), 12 / (2 * 3)])[y]
    _, rep = train_cnn(model, data, CNNTrainConfig(epochs=1, batch_size=12, val_fraction=0.0,
                                                   balance="weights"), device="cpu")
    assert rep.train_loss[0] == pytest.approx((wy * ce).sum() / wy.sum(), rel=1e-5)
    assert rep.train_loss[0] != pytest.approx(ce.mean(), rel=1e-3)  # not the plain mean
    assert rep.class_weights == pytest.approx((12 / 18, 2.0))


class _Recorder(nn.Module):
    """Records which samples (encoded in the first pixel) each training batch holds."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen += (x[:, 0, 0, 0] * 100).round().long().tolist()
        return self.lin(x[:, 0, 0, :1])


def test_sampler_draws_the_classes_evenly():
    y = np.array([0] * 45 + [1] * 5)
    x = np.zeros((50, 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = np.arange(50) / 100  # in [0, 1]; recovered as index / 100
    data = ImageData(x, y, ("major", "minor"))
    for balance, lo, hi in (("sampler", 0.4, 0.6), ("none", 0.09, 0.11)):
        model = _Recorder()
        train_cnn(model, data, CNNTrainConfig(epochs=20, batch_size=10, val_fraction=0.0,
                                              balance=balance), device="cpu")
        seen = np.asarray(model.seen)  # sample indices of every training batch
        assert len(seen) == 20 * 50
        share = (y[seen] == 1).mean()
        assert lo <= share <= hi, (balance, share)


def _x(n=6, h=40, w=48, c=1, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


def test_augmentation_keeps_shape_range_is_seeded_and_identity_when_off():
    x = _x()
    off = AugmentConfig.off()
    assert not off.enabled and augment_images(x, off, torch.Generator()) is x
    cfg = AugmentConfig()
    assert cfg.hflip is False  # off by default
    a = augment_images(x, cfg, torch.Generator().manual_seed(1))
    b = augment_images(x, cfg, torch.Generator().manual_seed(1))
    c = augment_images(x, cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    flips = augment_images(x, AugmentConfig.off().__class__(0, 0, 0, 0, 0, 0, 0, True),
                           torch.Generator().manual_seed(0))
    for i in range(len(x)):  # each image either kept or mirrored left-right, never upside down
        assert torch.equal(flips[i], x[i]) or torch.equal(flips[i], x[i].flip(-1))
    assert any(torch.equal(flips[i], x[i].flip(-1)) for i in range(len(x)))
    with pytest.raises(NnsensError, match="rotation_deg"):
        AugmentConfig(rotation_deg=90)


def _centre_of_mass(img):
    h, w = img.shape[-2:]
    ys, xs = np.mgrid[:h, :w]
    m = img.reshape(h, w).numpy()
    return (ys * m).sum() / m.sum(), (xs * m).sum() / m.sum()


def test_rotation_turns_about_the_probe_apex_at_the_top_centre():
    h, w = 40, 48
    x = torch.zeros((8, 1, h, w))
    top = x.clone()
    top[:, :, 0:3, w // 2 - 2:w // 2 + 2] = 1.0  # at the apex
    bottom = x.clone()
    bottom[:, :, h - 6:h - 2, w // 2 - 2:w // 2 + 2] = 1.0  # far from it
    cfg = AugmentConfig(rotation_deg=15, scale=0, translate=0, brightness=0, contrast=0, gamma=0,
                        speckle=0)
    rt = augment_images(top, cfg, torch.Generator().manual_seed(3))
    rb = augment_images(bottom, cfg, torch.Generator().manual_seed(3))  # same angles
    moves_top = [np.hypot(*np.subtract(_centre_of_mass(rt[i]), _centre_of_mass(top[i])))
                 for i in range(8)]
    moves_bottom = [abs(_centre_of_mass(rb[i])[1] - _centre_of_mass(bottom[i])[1]) for i in range(8)]
    assert max(moves_top) < 1.0
    assert max(moves_bottom) > 3.0  # ~ 36 px * sin(angle) sideways for the larger angles


def test_imagenet_init_copies_every_tensor_but_the_head():
    from torchvision.models import resnet18
    torch.manual_seed(1)
    ckpt = resnet18(weights=None)  # an "ImageNet" checkpoint: 1000 classes, 3 channels
    buf = io.BytesIO()
    torch.save(ckpt.state_dict(), buf)
    src = ckpt.state_dict()
    for channels in (3, 1):
        torch.manual_seed(2)
        model = build("resnet18", num_classes=3, in_channels=channels)
        head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
        rep = init_from_imagenet(model, "resnet18", buf.getvalue())
        got = model.state_dict()
        for k, v in got.items():
            if k.startswith("fc."):
                assert torch.equal(v, head_before[k])
            elif k == "conv1.weight" and channels == 1:
                torch.testing.assert_close(v, src[k].sum(1, keepdim=True))
            else:
                assert torch.equal(v, src[k]), k
        assert set(rep.head) == {"fc.weight", "fc.bias"}
        assert len(rep.copied) == len(got) - 2 and rep.unused == ()
        assert (rep.summed == "conv1.weight") == (channels == 1)
        assert "trained from scratch" in rep.describe()
    small = build("resnet18-small", num_classes=3, width=0.05)
    with pytest.raises(NnsensError, match="vgg16 or resnet18"):
        init_from_imagenet(small, "resnet18-small", buf.getvalue())
    bad = io.BytesIO()
    torch.save(small.state_dict(), bad)
    with pytest.raises(NnsensError, match="torchvision"):
        init_from_imagenet(build("resnet18", num_classes=3), "resnet18", bad.getvalue())


def test_trained_model_manifest_round_trips_recipe_and_class_names():
    rng = np.random.default_rng(0)
    originals = tuple(rng.uniform(0, 1, (1, 30 + 7 * (i % 3), 50)).astype(np.float32)
                      for i in range(12))
    d = ImageData(np.zeros((12, 1, 8, 8), np.float32), np.arange(12) % 2, ("neg", "pos"),
                  originals=originals, name="tiny")
    recipe = Recipe((32, 40), 1, "crop", (0.4,), (0.2,))
    tm = train_image_model(d, "resnet18-small", CNNTrainConfig(epochs=1, batch_size=4,
                                                               val_fraction=0.0),
                           recipe=recipe, width=0.05, device="cpu")
    assert tm.spec.input_shape == (1, 32, 40) and tm.spec.resize == "crop"
    entry = tm.manifest("m.pt")
    text = json.dumps({"m": entry}, allow_nan=False)
    back = spec_from_manifest(text.encode(), file_name="m.pt")
    assert back.resize == "crop" and back.class_names == ("neg", "pos")
    assert back.input_shape == (1, 32, 40) and back.mean == (0.4,) and back.std == (0.2,)
    assert Recipe.from_spec(back) == recipe
    lm = load_model(tm.state_dict_bytes(), arch=back.arch, arch_kwargs=back.arch_kwargs, spec=back)
    xin = torch.rand(2, 1, 32, 40)
    torch.testing.assert_close(lm.module(xin), tm.module.cpu()(xin))
