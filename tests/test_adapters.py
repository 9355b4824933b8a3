"""The third-party internals nnsens relies on, each behind one adapter module, checked on the
installed versions; a failure names the installed and the pinned version (see the adapter's
docstring for what it relies on, and adapt the adapter, not its callers):

* grad-cam hook objects: :mod:`nnsens_core.saliency._gradcam_adapter`
* Streamlit's pages manager and script-control exception: :mod:`ui._streamlit_internals`
* SALib's Sobol' base sequence and scaling: :mod:`nnsens_core.sobol._salib_adapter`
"""
from __future__ import annotations

import inspect
import threading
import warnings
from importlib.metadata import version

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core._hooks import hook_count
from nnsens_core.saliency import _gradcam_adapter as GA
from nnsens_core.sobol import _salib_adapter as SA
from ui import _streamlit_internals as SI


def _versions(dist: str, pinned: str) -> str:
    return f"installed {dist}=={version(dist)}, adapter written for {pinned}"


# --------------------------------------------------------------------------- grad-cam

GRADCAM = _versions("grad-cam", GA.PINNED)


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(5, 2)).eval()


def test_gradcam_object_has_the_hook_internals_the_adapter_swaps():
    from pytorch_grad_cam import GradCAM
    net = _conv_net()
    cam = GradCAM(model=net, target_layers=[net[0]])
    try:
        aag = getattr(cam, "activations_and_grads", None)
        assert aag is not None, f"GradCAM has no activations_and_grads ({GRADCAM})"
        for attr in ("handles", "save_activation", "save_gradient", "release", "activations",
                     "gradients"):
            assert hasattr(aag, attr), f"ActivationsAndGradients.{attr} is gone ({GRADCAM})"
        assert len(aag.handles) == 2 and len(net[0]._forward_hooks) == 2, \
            f"the package no longer registers its two forward hooks as handles ({GRADCAM})"
    finally:
        aag.release()
    assert hook_count(net) == 0, f"ActivationsAndGradients.release() leaves hooks ({GRADCAM})"


def test_make_cam_records_activations_and_gradients_in_this_thread_only():
    from pytorch_grad_cam import GradCAM
    net = _conv_net()
    cam = GA.make_cam(GradCAM, net, net[0])
    try:
        hooks = list(net[0]._forward_hooks.values())
        assert len(hooks) == 2 and all(hasattr(h, "nnsens_thread") for h in hooks), \
            f"the package's own hooks are still registered ({GRADCAM})"
        aag = cam.activations_and_grads
        out = threading.Thread(target=lambda: net(torch.ones(3, 3, 8, 8)))
        out.start()
        out.join()
        assert GA.recorded_activations(cam) == [] and aag.gradients == []
        x = torch.ones(1, 3, 8, 8, requires_grad=True)
        aag(x)[0, 1].backward()    # save_activation and save_gradient as forward hooks
        assert len(GA.recorded_activations(cam)) == 1, f"save_activation recorded nothing ({GRADCAM})"
        assert GA.recorded_activations(cam)[0].shape == (1, 5, 8, 8)
        assert len(aag.gradients) == 1 and aag.gradients[0].shape == (1, 5, 8, 8), \
            f"save_gradient no longer records the layer's gradient ({GRADCAM})"
    finally:
        GA.release_cam(cam)
    assert hook_count(net) == 0, f"release() does not remove the adapter's handles ({GRADCAM})"
    assert GA.recorded_activations(cam) == [], f"release() keeps the activations ({GRADCAM})"


def test_batched_scorecam_overrides_the_weights_the_package_calls():
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    ours, theirs = inspect.signature(GA.score_cam_class().get_cam_weights), \
        inspect.signature(ScoreCAM.get_cam_weights)
    assert list(ours.parameters) == list(theirs.parameters), \
        f"ScoreCAM.get_cam_weights{theirs} changed; the adapter overrides it as {ours} ({GRADCAM})"
    net = _conv_net()
    calls = []
    net[0].register_forward_pre_hook(lambda _m, inp: calls.append(len(inp[0])))
    cam = GA.make_cam(GA.score_cam_class(), net, net[0])
    cam.batch_size = 2
    try:
        assert cam.model is net and cam.device == torch.device("cpu")
        cam(input_tensor=torch.rand(1, 3, 8, 8), targets=[ClassifierOutputTarget(1)])
    finally:
        GA.release_cam(cam)
    # one pass for the activations, then the 5 masked inputs in batches of 2
    assert calls == [1, 2, 2, 1], \
        f"the package did not call the adapter's get_cam_weights as before: passes {calls} ({GRADCAM})"


def test_volume_cam_class_overrides_the_per_layer_step_the_package_calls():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    for name in ("compute_cam_per_layer", "get_cam_image"):
        params = list(inspect.signature(getattr(BaseCAM, name)).parameters)
        expected = {"compute_cam_per_layer": ["self", "input_tensor", "targets", "eigen_smooth"],
                    "get_cam_image": ["self", "input_tensor", "target_layer", "targets",
                                      "activations", "grads", "eigen_smooth"]}[name]
        assert params == expected, f"BaseCAM.{name}{params} changed; volume_cam_class relies on " \
                                   f"{expected} ({GRADCAM})"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    calls = []
    cls = GA.volume_cam_class(GradCAM)
    cam = GA.make_cam(cls, net, net[2])
    cam.get_cam_image = lambda *a, **k: calls.append(a[3].shape) or cls.get_cam_image(cam, *a, **k)
    try:
        out = cam(input_tensor=torch.rand(1, 1, 8, 6, 4), targets=[ClassifierOutputTarget(1)])
    finally:
        GA.release_cam(cam)
    assert calls == [(1, 3, 4, 3, 2)], \
        f"the package no longer calls compute_cam_per_layer / get_cam_image as before ({GRADCAM})"
    assert out.shape == (1, 8, 6, 4)
    assert GA.volume_cam_class(GradCAM) is cls                 # one class per package class


# --------------------------------------------------------------------------- Streamlit

STREAMLIT = _versions("streamlit", SI.PINNED)


@pytest.fixture
def pages_manager(monkeypatch, tmp_path):
    """A fresh process-wide flag (restored afterwards) and an app folder with a pages/ folder."""
    from streamlit.runtime.pages_manager import PagesManager
    assert hasattr(PagesManager, "uses_pages_directory"), \
        f"PagesManager.uses_pages_directory is gone ({STREAMLIT})"
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    (tmp_path / "pages").mkdir()
    (tmp_path / "app.py").write_text("")
    return PagesManager, str(tmp_path / "app.py")


def test_pages_manager_flag_follows_the_pages_folder_and_can_be_switched_off(pages_manager):
    PagesManager, main = pages_manager
    PagesManager(main)
    assert PagesManager.uses_pages_directory is True, \
        f"a pages/ folder next to the main script no longer sets the legacy flag ({STREAMLIT})"
    assert SI.leave_pages_directory_mode() is True
    assert PagesManager.uses_pages_directory is False
    PagesManager(main)
    assert PagesManager.uses_pages_directory is False, \
        f"a new PagesManager turns the flag on again once it was set ({STREAMLIT})"
    assert SI.leave_pages_directory_mode() is False


def test_keep_router_in_apptest_keeps_the_flag_off(pages_manager, monkeypatch):
    PagesManager, main = pages_manager
    SI.keep_router_in_apptest(monkeypatch)
    PagesManager(main)
    assert PagesManager.uses_pages_directory is False, STREAMLIT


def _stop_and_rerun_script():
    import streamlit as st

    from ui._streamlit_internals import ScriptControlException
    from ui.widgets import guard
    seen = st.session_state.setdefault("seen", [])
    if not seen:
        try:
            st.rerun()
        except ScriptControlException:
            seen.append("rerun")
            raise
    with guard("stopping"):
        try:
            st.stop()
        except ScriptControlException:
            seen.append("stop")
            raise
    st.write("after stop")


@pytest.mark.slow  # an AppTest script run
def test_stop_and_rerun_raise_the_script_control_exception_and_guard_passes_it():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_function(_stop_and_rerun_script).run(timeout=30)
    assert list(at.session_state["seen"]) == ["rerun", "stop"], \
        f"st.rerun()/st.stop() no longer raise ScriptControlException ({STREAMLIT})"
    assert not at.exception and not at.error, "guard() turned st.stop() into an error message"
    assert [m.value for m in at.markdown] == []


# --------------------------------------------------------------------------- SALib

SALIB = _versions("SALib", SA.PINNED) + f", scipy=={version('scipy')}"


@pytest.mark.parametrize("seed", [0, 5, 12345])
def test_sobol_base_is_the_sequence_salib_draws(seed):
    """SALib's A and B matrices (first and last row of every block, unit bounds) are the two halves
    of the base; ``sample`` reproduces the rest from them (tests/test_sobol.py)."""
    from SALib.sample import sobol as salib_sobol
    D, n = 3, 16
    problem = {"num_vars": D, "names": list("abc"), "bounds": [[0.0, 1.0]] * D}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = salib_sobol.sample(problem, n, calc_second_order=False, seed=seed)
    ref = ref.reshape(n, D + 2, D)
    base = SA.sobol_base(n, 2 * D, seed)
    assert base.shape == (n, 2 * D) and base.dtype == np.float64
    np.testing.assert_allclose(base, np.hstack([ref[:, 0], ref[:, -1]]), rtol=0, atol=1e-12,
                               err_msg=f"SALib's Sobol' base (seed={seed}) changed ({SALIB})")


def test_sobol_base_seed_is_reproducible_and_none_is_fresh():
    np.testing.assert_array_equal(SA.sobol_base(8, 2, 3), SA.sobol_base(8, 2, 3))
    assert not np.array_equal(SA.sobol_base(8, 2, 3), SA.sobol_base(8, 2, 4))
    assert not np.array_equal(SA.sobol_base(8, 2, None), SA.sobol_base(8, 2, None))


def test_scale_to_bounds_is_salibs_scaling_bit_for_bit():
    from SALib.util import _scale_samples
    bounds = [(0.0, 1.0), (-2.0, 5.0), (10.0, 11.0), (0.1, 0.3), (-1e3, 1e-3)]
    u = np.random.default_rng(0).random((257, len(bounds)))
    ref = u.copy()
    _scale_samples(ref, [list(b) for b in bounds])
    got = u.copy()
    assert SA.scale_to_bounds(got, bounds) is got
    np.testing.assert_array_equal(got, ref, err_msg=f"SALib's scaling changed ({SALIB})")
    lo, hi = np.array(bounds).T
    np.testing.assert_allclose(got, lo + u * (hi - lo), rtol=1e-15, atol=1e-12)


def test_session_state_internals_keep_widget_values_relies_on():
    """ui._streamlit_internals.keep_widget_values reads which user keys belong to widgets and what
    value each holds from the SessionState behind st.session_state."""
    import dataclasses

    from streamlit.runtime.state.session_state import KeyIdMapper, SessionState, WStates
    from streamlit.runtime.state.session_state_proxy import get_session_state  # noqa: F401

    fields = {f.name for f in dataclasses.fields(SessionState)}
    assert {"_key_id_mapper", "_new_widget_state"} <= fields, f"SessionState changed ({STREAMLIT})"
    assert isinstance(KeyIdMapper().id_key_mapping, dict)
    assert isinstance(WStates().widget_metadata, dict)
