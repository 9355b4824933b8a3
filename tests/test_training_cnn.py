"""train_cnn (2-D and 3-D), balanced accuracy, stratified folds and the 3-D CNN of the zoo."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from nnsens_core._blocks import _first_conv_channels
from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.training import (CNNTrainConfig, balanced_accuracy, predict, stratified_folds,
                                  train_cnn)
from nnsens_core.zoo import ModelSpec, build, conv_layers, image_blocks, last_conv_layer


@pytest.mark.parametrize("seed", range(6))
def test_balanced_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, 4, n))  # class 3 only predicted
    with pytest.warns(UserWarning) if not set(p) <= set(y) else _nothing():
        want = balanced_accuracy_score(y, p)
    assert balanced_accuracy(y, p) == pytest.approx(want, abs=1e-12)
    assert balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == 0.5
    with pytest.raises(NnsensError, match="as many predictions"):
        balanced_accuracy([0, 1], [0])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_stratified_folds_disjoint_covering_stratified_and_seeded():
    y = np.array([0] * 23 + [1] * 11 + [2] * 6)
    folds = stratified_folds(y, 5, seed=3)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(y)))  # covering, each index once (disjoint)
    for tr, te in folds:
        assert np.intersect1d(tr, te).size == 0 and len(tr) + len(te) == len(y)
        for c, n_c in ((0, 23), (1, 11), (2, 6)):
            assert abs((y[te] == c).sum() - n_c / 5) < 1  # within one of the class's share
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 1
    again = stratified_folds(y, 5, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, stratified_folds(y, 5, seed=4)))
    with pytest.raises(NnsensError, match="class 2 has 6 sample"):
        stratified_folds(y, 7)
    with pytest.raises(NnsensError, match="k=1"):
        stratified_folds(y, 1)


def test_cnn3d_forward_blocks_and_spec():
    net = build("cnn3d-small", num_classes=2, in_channels=1, width=4).eval()
    with torch.no_grad():
        assert net(torch.zeros(3, 1, 48, 48, 48)).shape == (3, 2)
        assert net(torch.zeros(2, 1, 20, 24, 28)).shape == (2, 2)  # any size >= 16 per side
    assert list(image_blocks(net)) == ["block1", "block2", "block3", "block4"]
    assert conv_layers(net) == ["features.0", "features.4", "features.8", "features.12"]
    assert last_conv_layer(net) == "features.12" and _first_conv_channels(net) == 1
    spec = ModelSpec("m", "cnn3d-small", "image", (2, 4, 5, 6), mean=(0.5, 0.2), std=(0.25, 0.5))
    x = torch.rand(3, 2, 4, 5, 6)
    z = spec.normalize(x)
    torch.testing.assert_close(z[:, 1], (x[:, 1] - 0.2) / 0.5)
    torch.testing.assert_close(spec.denormalize(z), x)
    lo, hi = spec.input_range(x)
    assert lo.shape == (2, 1, 1, 1) and float(hi[0].max()) == 2.0
    assert spec.ndim_spatial == 3
    with pytest.raises(NnsensError, match=r"\(C, D, H, W\)"):
        ModelSpec("m", "a", "image", (1, 2, 3, 4, 5))


def _cubes(n=40, s=12, seed=0):
    """Separable volumes: class 1 has a bright cube in one corner, class 0 in the other."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    v = rng.uniform(0, 0.4, (n, 1, s, s, s)).astype(np.float32)
    for i in range(n):
        a = 1 if y[i] else s - 5
        v[i, 0, a:a + 4, a:a + 4, a:a + 4] += 0.6
    return ImageData(v, y.astype(np.int64), ("neg", "pos"))


def test_train_cnn_learns_a_separable_3d_set_fast_with_per_batch_progress():
    data = _cubes()
    torch.manual_seed(0)
    model = build("cnn3d-small", num_classes=2, width=4, blocks=2, dropout=0.0)
    calls = []
    spec = ModelSpec("m", "cnn3d-small", "image", (1, 12, 12, 12), ("neg", "pos"), mean=(0.5,),
                     std=(0.25,))
    model, rep = train_cnn(model, data, CNNTrainConfig(epochs=8, batch_size=8, patience=0), spec=spec,
                           device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert rep.best_val_balanced_accuracy >= 0.95
    assert len(rep.val_idx) == 8 and len(rep.train_idx) == 32
    assert (data.labels[rep.val_idx] == 1).sum() == 4  # stratified validation split
    assert not model.training
    x = spec.normalize(torch.as_tensor(data.images[rep.val_idx]))
    pred = predict(model, x, "cpu").argmax(1).numpy()
    assert balanced_accuracy(data.labels[rep.val_idx], pred) == rep.best_val_balanced_accuracy
    total = 8 * 4  # epochs x batches
    assert calls[-1] == (total, total) and len(calls) == total + 1
    assert [d for d, _ in calls[:-1]] == list(range(1, total + 1))
    doc = rep.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["epochs_run"] == 8 and len(doc["history"]["train_loss"]) == 8
    assert rep.to_frame().shape == (8, 4) and set(rep.arrays()) == {"train_idx", "val_idx"}


def test_early_stopping_keeps_the_best_epochs_weights():
    """Validation labels are noise: the balanced accuracy wanders, training stops ``patience``
    epochs after the best one, and the returned model scores exactly that epoch's numbers."""
    data = _cubes(48, seed=1)
    noisy = data.labels.copy()
    rng = np.random.default_rng(5)
    val = np.arange(32, 48)
    noisy[val] = rng.permutation(noisy[val])
    data = ImageData(data.images, noisy, data.class_names)
    torch.manual_seed(1)
    model = build("cnn3d-small", num_classes=2, width=4, blocks=2, dropout=0.0)
    cfg = CNNTrainConfig(epochs=40, batch_size=8, patience=2, lr=3e-3, seed=2)
    model, rep = train_cnn(model, data, cfg, train_idx=np.arange(32), val_idx=val, device="cpu")
    assert rep.stopped_early and rep.epochs_run < 40
    assert rep.epochs_run - rep.best_epoch == 2
    logits = predict(model, data.images[val], "cpu")
    vloss = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(noisy[val])))
    assert vloss == pytest.approx(rep.val_loss[rep.best_epoch - 1], rel=1e-5)
    assert vloss != pytest.approx(rep.val_loss[-1], rel=1e-5)
    assert balanced_accuracy(noisy[val], logits.argmax(1).numpy()) == rep.best_val_balanced_accuracy


def test_train_cnn_on_2d_images_and_errors():
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    imgs = rng.uniform(0, 0.3, (24, 1, 32, 32)).astype(np.float32)
    imgs[y == 1, :, :16] += 0.7
    data = ImageData(imgs, y.astype(np.int64), ("a", "b"))
    torch.manual_seed(0)
    model = build("vgg16-small", num_classes=2, in_channels=1)
    model, rep = train_cnn(model, data, CNNTrainConfig(epochs=2, batch_size=8, val_fraction=0.0),
                           device="cpu")
    assert rep.val_balanced_accuracy == [] and rep.best_epoch == 2 and len(rep.train_idx) == 24
    with pytest.raises(NnsensError, match="num_classes=2"):
        train_cnn(build("vgg16-small", num_classes=3, in_channels=1), data, device="cpu")
    with pytest.raises(NnsensError, match=r"shape \(1, 32, 32\).*\(1, 64, 64\)"):
        train_cnn(model, data, spec=ModelSpec("m", "vgg16-small", "image", (1, 64, 64)))
    with pytest.raises(NnsensError, match="share 2 sample"):
        train_cnn(model, data, train_idx=[0, 1, 2, 3], val_idx=[2, 3], device="cpu")
    with pytest.raises(NnsensError, match="outside"):
        train_cnn(model, data, val_idx=[99], device="cpu")
    with pytest.raises(NnsensError, match="patience"):
        CNNTrainConfig(patience=-1)
    with pytest.raises(NnsensError, match="val_fraction"):
        CNNTrainConfig(val_fraction=0.8)
