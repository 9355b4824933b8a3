"""Issue 11, bounded resources: every heavy run has a cost estimate before it starts, and a
server-wide budget admits concurrent runs only while their estimates together fit."""
import threading

import pytest
import torch

from nnsens_core import budget as B
from nnsens_core import deployment, loading
from nnsens_core.__main__ import main
from nnsens_core.activation_max import AMConfig
from nnsens_core.errors import NnsensError
from nnsens_core.landscape import LandscapeConfig
from nnsens_core.local_sensitivity import LocalConfig
from nnsens_core.saliency import registry as R
from nnsens_core.saliency.meaningful_mask import MaskConfig
from nnsens_core.saliency.occlusion import OcclusionConfig
from nnsens_core.sobol import FeatureReductionConfig, SobolConfig
from nnsens_core.training import TrainConfig
from nnsens_core.zoo import build

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def cnn():
    return build("vgg16-small", num_classes=3, width=0.0625).eval()


@pytest.fixture(scope="module")
def mlp():
    return build("paper-mlp", n_inputs=8, hidden=10).eval()


def _increasing(values):
    return all(b > a for a, b in zip(values, values[1:]))


def test_estimates_grow_with_every_input(cnn, mlp):
    assert _increasing([B.sobol(mlp, 8, SobolConfig(n=n)).gflop for n in (256, 1024, 4096)])
    assert B.sobol(mlp, 8, SobolConfig(n=1024, second_order=True)).gflop > \
        B.sobol(mlp, 8, SobolConfig(n=1024, second_order=False)).gflop
    assert _increasing([B.sobol(mlp, 8, SobolConfig(n=1024, num_resamples=r)).gflop for r in (10, 100)])
    assert _increasing([B.convergence(mlp, 8, (128, n), 100).gflop for n in (256, 1024)])
    assert _increasing([B.local(cnn, SHAPE, LocalConfig(patch=p)).gflop for p in (8, 4, 1)])
    assert _increasing([B.local(cnn, SHAPE, LocalConfig(patch=4), n_images=k).gflop for k in (1, 3)])
    assert _increasing([B.am(cnn, 3, AMConfig(steps=s), SHAPE).gflop for s in (10, 100)])
    assert _increasing([B.am(cnn, k, AMConfig(steps=10), SHAPE).gflop for k in (8, 16)])
    assert _increasing([B.occlusion(cnn, SHAPE, OcclusionConfig(window=8, stride=s)).gflop for s in (8, 4, 2)])
    assert _increasing([B.occlusion(cnn, SHAPE, OcclusionConfig(), k).gflop for k in (1, 4)])
    assert _increasing([B.masks(cnn, MaskConfig(steps=s), 1, SHAPE).gflop for s in (10, 100)])
    assert _increasing([B.training(mlp, 500, TrainConfig(epochs=e)).gflop for e in (10, 100)])
    assert _increasing([B.training(mlp, r, TrainConfig(epochs=10)).gflop for r in (100, 1000)])
    assert _increasing([B.feature_reduction(mlp, 500, FeatureReductionConfig(seeds=tuple(range(k)))).gflop
                        for k in (1, 5)])
    assert _increasing([B.landscape(500, 8, LandscapeConfig(epochs=e)).gflop for e in (10, 200)])
    assert _increasing([B.surface(mlp, 500, g).gflop for g in (11, 41)])
    cfgs = {m: R.default_config(m) for m in ("gradcam", "occlusion", "mask")}
    parts = [B.compare(cnn, SHAPE, ["gradcam"], cfgs).gflop, B.compare(cnn, SHAPE, ["gradcam", "occlusion"], cfgs).gflop,
             B.compare(cnn, SHAPE, list(cfgs), cfgs).gflop]
    assert _increasing(parts)
    assert B.compare(cnn, SHAPE, list(cfgs), cfgs).gflop == pytest.approx(
        sum(B.saliency_method(cnn, SHAPE, m, c).gflop for m, c in cfgs.items()))
    assert B.compare(cnn, SHAPE, list(cfgs), cfgs, 2, rounds=3).gflop > B.compare(cnn, SHAPE, list(cfgs), cfgs, 2).gflop


def test_a_bigger_model_costs_more():
    small = build("vgg16-small", num_classes=3, width=0.0625)
    wide = build("vgg16-small", num_classes=3, width=0.25)
    assert B.forward_flop(wide, SHAPE) > 4 * B.forward_flop(small, SHAPE)


def test_two_runs_that_fit_alone_but_not_together(cnn):
    est = B.am(cnn, 3, AMConfig(steps=50), SHAPE)
    budget = B.Budget(1.5 * est.gflop)
    started, release = threading.Event(), threading.Event()
    errors = []

    def first():
        with budget.admit(est):
            started.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(10)
    assert budget.running == 1 and budget.in_use == pytest.approx(est.gflop)
    try:
        with budget.admit(est):
            errors.append("the second run was admitted")
    except NnsensError as exc:
        msg = str(exc)
        assert "busy" in msg and "reduce the steps" in msg and "\n" not in msg
    release.set()
    t.join()
    assert errors == []
    assert budget.running == 0 and budget.in_use == 0
    with budget.admit(est):  # released after the first one finished
        assert budget.running == 1
    assert budget.running == 0


def test_released_when_the_run_fails(cnn):
    est = B.am(cnn, 3, AMConfig(steps=50), SHAPE)
    budget = B.Budget(1.5 * est.gflop)
    with pytest.raises(RuntimeError):
        with budget.admit(est):
            raise RuntimeError("the run failed")
    assert budget.in_use == 0


def test_a_run_over_the_whole_budget_says_what_to_reduce(cnn):
    est = B.local(cnn, SHAPE, LocalConfig(patch=1))
    budget = B.Budget(est.gflop / 2)
    why = budget.refusal(est)
    assert why and "increase the patch size" in why and "GFLOP" in why
    with pytest.raises(NnsensError, match="over this server's budget"):
        with budget.admit(est):
            pass


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.delenv(B.BUDGET_ENV, raising=False)
    monkeypatch.delenv(deployment.PUBLIC_ENV, raising=False)
    assert B.default_limit() == B.DEFAULT_BUDGET
    monkeypatch.setenv(deployment.PUBLIC_ENV, "1")
    assert B.default_limit() == B.PUBLIC_BUDGET < B.DEFAULT_BUDGET
    assert deployment.max_weights_bytes() < loading.DEFAULT_MAX_BYTES
    assert deployment.max_data_bytes() < deployment.MAX_DATA_MB * 2**20
    monkeypatch.setenv(B.BUDGET_ENV, "42")
    assert B.default_limit() == 42
    assert B.reset_server_budget().limit == 42
    monkeypatch.setenv(B.BUDGET_ENV, "lots")
    with pytest.raises(NnsensError, match="NNSENS_BUDGET"):
        B.default_limit()
    monkeypatch.delenv(B.BUDGET_ENV)
    monkeypatch.delenv(deployment.PUBLIC_ENV)
    B.reset_server_budget()


def test_public_mode_refuses_code_models_even_when_allowed(monkeypatch):
    monkeypatch.setenv(loading.CODE_MODELS_ENV, "1")
    assert loading.code_models_allowed()
    monkeypatch.setenv(deployment.PUBLIC_ENV, "1")
    assert not loading.code_models_allowed()


def test_data_uploads_have_their_own_limit(monkeypatch):
    monkeypatch.setenv(deployment.DATA_ENV, "1")
    deployment.check_data_size(2**20)
    with pytest.raises(NnsensError, match="1 MiB limit for datasets"):
        deployment.check_data_size(2**20 + 1, "scans.zip")


def test_cli_asks_for_yes_above_the_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(B.BUDGET_ENV, "0.001")
    argv = ["am", "--steps", "2", "--out", str(tmp_path / "a"), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--yes" in err and "\n" not in err and err.startswith("error: ")
    assert not (tmp_path / "a").exists()
    assert main([*argv, "--yes"]) == 0
    assert "estimate: activation maximization" in capsys.readouterr().out


@pytest.mark.slow
def test_pages_show_the_estimate_and_refuse_over_the_budget(monkeypatch):
    from pathlib import Path

    from ui._streamlit_internals import keep_router_in_apptest
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "app"))
    from app_pages import open_page
    keep_router_in_apptest(monkeypatch)
    try:
        B.reset_server_budget(1e-9)  # every run is over it
        at = open_page("pages/sobol.py")
        assert any("over this server's budget" in e.value and "reduce N" in e.value for e in at.error)
        assert at.button(key="sobol_run").disabled

        limit = 5000.0
        budget = B.reset_server_budget(limit)  # fits alone, but another run holds most of it
        at = open_page("pages/sobol.py", state={"sobol_n": 128, "sobol_R": 10})
        assert any("Estimated cost" in c.value for c in at.caption)
        assert not at.button(key="sobol_run").disabled
        with budget.admit(B.Estimate("another session's run", limit * 0.999999, "")):
            at.button(key="sobol_run").click().run()
            assert any("server is busy" in e.value for e in at.error)
            assert st_result(at) is None
        at.button(key="sobol_run").click().run()  # released: now it runs
        assert not at.error and st_result(at) is not None, [e.value for e in at.error]
    finally:
        B.reset_server_budget()


def st_result(at):
    return at.session_state["sobol"]["last"].get(next(iter(at.session_state["sobol"]["last"]), None)) \
        if at.session_state["sobol"]["last"] else None


def test_every_shared_cache_is_bounded():
    """Uploads live in session state (freed with the session); the caches shared by every session
    hold at most max_entries, and those an upload's model or results can reach expire (ttl)."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "pages").glob("*.py")) + [root / "ui" / "cache.py"]
    found = 0
    for path in files:
        src = path.read_text()
        for m in re.finditer(r"@st\.(cache_data|cache_resource)(\([^)]*\))?\s*\ndef (\w+)", src):
            found += 1
            args, name = m.group(2) or "", m.group(3)
            assert "max_entries=" in args, f"{path.name}:{name} has no max_entries"
            if not name.startswith("demo_"):
                assert "ttl=" in args, f"{path.name}:{name} has no ttl"
    assert found >= 15


def test_deployment_files_pin_everything_and_run_read_only():
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    docker = (root / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", docker, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert re.search(r"^USER\s+(?!root)\w+", docker, re.M)
    assert "NNSENS_CACHE" not in docker and "chown" not in docker  # nothing writable for the server
    assert "pip install --no-deps ." in docker
    for line in (root / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+\-]*", line.strip()), line
    run = (root / "run.sh").read_text()
    assert "public)" in run and "NNSENS_PUBLIC=1" in run


def test_volume_convolutions_count_at_their_measured_cost():
    """A Conv3d FLOP costs VOLUME_CONV_COST 2-D FLOPs (measured on the CPU), so estimates for the
    3-D demo are not 6x optimistic."""
    from torch import nn as _nn
    from torch.utils.flop_counter import FlopCounterMode

    from nnsens_core import budget as B

    net = _nn.Sequential(_nn.Conv3d(1, 4, 3, padding=1), _nn.Flatten(), _nn.Linear(4 * 6 ** 3, 2))
    with FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 1, 6, 6, 6))
    conv = 2 * 4 * 27 * 6 ** 3  # multiply-adds of the convolution, x2
    lin = fc.get_total_flops() - conv
    assert B.forward_flop(net, (1, 6, 6, 6)) == conv * B.VOLUME_CONV_COST + lin
