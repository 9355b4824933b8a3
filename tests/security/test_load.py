"""Issue 11 load test: 8 concurrent dashboard sessions (AppTest, one thread each), each with its own
uploads under the SAME file names (a tabular model 'model.pt' and a CNN 'cnn.pt', different
weights), each running Sobol, saliency (one image, two cheap methods) and activation maximization.
Every result must equal the same run done alone with the core, no session may see another's, no
run may fail, and the process's peak memory is recorded (figures in docs/security.md).

AppTest runs a script through process-wide Streamlit state (the runtime singleton, the pages
manager): two script runs at the same instant intermittently lost each other's widget ids
(KeyError '$$ID-...'), an artefact of the test harness that a real server, with one script thread
per session, does not have. So the eight sessions live side by side in eight threads, share every
cache and model object, and interleave their runs, but one script run executes at a time
(RUN_LOCK). Concurrent computation on one shared model is tested where it matters, with threads
that provably overlap (tests/test_local_sensitivity.py, tests/test_incremental_occlusion.py,
tests/test_batching_hooks.py)."""
import resource
import threading
import time

import numpy as np
import pytest
import torch

from nnsens_core import activation_max as A
from nnsens_core import sobol as S
from nnsens_core.data import demo_tabular
from nnsens_core.phantom import demo_images
from nnsens_core.saliency import compare as C
from nnsens_core.zoo import IMAGE, LoadedModel, ModelSpec, build

from tests.app.app_pages import APP
from tests.uploads import uploaded_paper_mlp

pytestmark = pytest.mark.slow
SESSIONS = 8
DEMO = demo_tabular()
RUN_LOCK = threading.Lock()
PHANTOM = demo_images("test", n=90)  # what the pages' demo image dataset holds
CNN_SHAPE = tuple(PHANTOM.shape)


def _cnn(seed: int) -> LoadedModel:
    torch.manual_seed(100 + seed)
    kwargs = {"num_classes": len(PHANTOM.class_names), "width": 0.0625}
    module = build("vgg16-small", **kwargs).eval()
    spec = ModelSpec(name="cnn.pt", arch="vgg16-small", task=IMAGE, input_shape=CNN_SHAPE,
                     class_names=tuple(PHANTOM.class_names), arch_kwargs=kwargs)
    return LoadedModel(module, spec, "uploaded")


def _ok(at, where: str) -> None:
    assert not at.exception, (where, at.exception)
    assert not at.error, (where, [e.value for e in at.error])


def _run(at) -> None:
    with RUN_LOCK:
        at.run()


def _session(i: int, out: dict) -> None:
    from streamlit.testing.v1 import AppTest
    tab, cnn = uploaded_paper_mlp(i), _cnn(i)
    at = AppTest.from_file(APP, default_timeout=170)
    at.session_state["uploads"] = {"tabular_data": {}, "tabular_model": {"model.pt": tab},
                                   "image_data": {}, "image_model": {"cnn.pt": cnn}}
    at.session_state["sel_tabular_model"] = "model.pt"
    at.session_state["sel_image_model"] = "cnn.pt"
    # Sobol
    at.switch_page("pages/sobol.py")
    _run(at)
    _ok(at, "sobol page")
    at.select_slider(key="sobol_n").set_value(128)
    at.checkbox(key="sobol_so").uncheck()
    at.selectbox(key="sobol_layer").set_value("(model output only)")
    at.number_input(key="sobol_R").set_value(10)
    at.button(key="sobol_run").click()
    _run(at)
    _ok(at, "sobol run")
    (out["sobol"],) = at.session_state["sobol"]["runs"].values()
    # saliency: the first image, two cheap methods
    at.switch_page("pages/saliency.py")
    _run(at)
    at.multiselect(key="sal_methods").set_value(["gradcam", "gradient"])
    _run(at)
    _ok(at, "saliency")
    out["saliency"] = at.session_state["sal_current_maps"]
    # activation maximization: a few steps on one class
    at.switch_page("pages/activation_max.py")
    _run(at)
    at.multiselect(key="am_classes").set_value([i % len(PHANTOM.class_names)])
    at.number_input(key="am_steps").set_value(4)
    at.number_input(key="am_preview").set_value(0)
    at.button(key="am_run").click()
    _run(at)
    _ok(at, "am")
    (run,) = at.session_state["am"]["runs"].values()
    out["am"] = run["res"]
    out["models"] = (tab, cnn)


def _one_server_runtime(monkeypatch) -> None:
    """AppTest (built for one session at a time) installs a fresh mock Runtime singleton for every
    run and clears it afterwards, which would pull the runtime from under the other sessions. Give
    all sessions one runtime and one script cache, as a real server does, and let AppTest's
    per-run swaps go nowhere. (Compiling pages concurrently in several threads also trips a CPython
    3.11 bug, "AST constructor recursion depth mismatch", which the server's shared cache avoids.)"""
    from unittest.mock import MagicMock

    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime import Runtime
    from streamlit.runtime.pages_manager import PagesManager

    shared = MagicMock(spec=Runtime)
    shared.media_file_mgr = app_test.MediaFileManager(app_test.MemoryMediaFileStorage("/mock/media"))
    shared.dataframe_source_mgr = app_test.DataframeSourceManager()
    shared.cache_storage_manager = app_test.MemoryCacheStorageManager()
    bidi = app_test.BidiComponentManager()
    bidi.discover_and_register_components(start_file_watching=False)
    shared.bidi_component_registry = bidi
    monkeypatch.setattr(Runtime, "_instance", shared)

    class PerRunRuntime:  # AppTest's `Runtime._instance = ...` lands here
        _instance = None

    class PerRunPages(PagesManager):  # AppTest's `uses_pages_directory = None` reset lands here
        pass

    script_cache = app_test.ScriptCache()  # one per server: compiles each page once, under its lock
    monkeypatch.setattr(app_test, "ScriptCache", lambda: script_cache)
    monkeypatch.setattr(app_test, "Runtime", PerRunRuntime)
    monkeypatch.setattr(app_test, "PagesManager", PerRunPages)
    monkeypatch.setattr(PagesManager, "uses_pages_directory", False)


def test_eight_concurrent_sessions_with_same_named_uploads(monkeypatch):
    from ui._streamlit_internals import keep_router_in_apptest
    keep_router_in_apptest(monkeypatch)
    _one_server_runtime(monkeypatch)
    outs = [{} for _ in range(SESSIONS)]
    failures: list[str] = []

    def work(i):
        outs[i]["t0"] = time.perf_counter()
        try:
            _session(i, outs[i])
        except BaseException as exc:  # noqa: BLE001 - counted and reported below
            failures.append(f"session {i}: {type(exc).__name__}: {str(exc)[:300]}")
        outs[i]["t1"] = time.perf_counter()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    wall = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = sum(len([k for k in ("sobol", "saliency", "am") if k in o]) for o in outs)
    print(f"\nload: sessions={SESSIONS} runs={runs} failures={len(failures)} "
          f"max_rss_mib={rss_mib:.0f} wall_s={wall:.1f}")
    assert not any(t.is_alive() for t in threads), "a session did not finish"
    assert failures == [], failures
    assert runs == 3 * SESSIONS
    assert max(o["t0"] for o in outs) < min(o["t1"] for o in outs), "the sessions did not overlap"

    # every result equals the same run done alone (the core, in this thread, after the load)
    s1s = []
    for i, o in enumerate(outs):
        tab, cnn = o["models"]
        res = o["sobol"]
        alone = S.run(tab, res.problem, res.config, device="cpu")
        np.testing.assert_allclose(res.output().S1, alone.output().S1, rtol=1e-9, atol=1e-12)
        s1s.append(res.output().S1)
        index, cls, maps = o["saliency"]
        x = cnn.spec.normalize(torch.as_tensor(PHANTOM.images[index:index + 1], dtype=torch.float32))
        for m, got in maps.items():
            want = C.explain(cnn.module, cnn.spec, x, [cls], [m], None, "cpu")[m][0].numpy()
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"session {i} {m}")
        am = o["am"]
        alone = A.maximize(cnn.module, cnn.spec, list(am.targets), am.config, "cpu")
        torch.testing.assert_close(am.images, alone.images, rtol=1e-4, atol=1e-5)
    # no cross-talk: different uploads under the same names gave different results
    for i in range(SESSIONS):
        for j in range(i + 1, SESSIONS):
            assert not np.allclose(s1s[i], s1s[j]), (i, j)
            assert not np.allclose(outs[i]["am"].images.numpy(), outs[j]["am"].images.numpy()) or \
                outs[i]["am"].targets != outs[j]["am"].targets, (i, j)
    assert wall < 180
