"""The Robustness page hands its runs & folds study to a background thread (ui.background): the
progress comes from the store, the result appears when it finishes, and a new session with the
same owner token and settings re-attaches instead of starting another study."""
import time

from app_pages import open_page

from ui import background as BG

PAGE = "pages/robustness.py"


def _tiny(at):
    next(w for w in at.number_input if w.key.startswith("rb_steps|")).set_value(2)
    at.number_input(key="rb_runs_epochs").set_value(1)
    next(w for w in at.number_input if w.key.startswith("rb_runs_inputs")).set_value(6)
    at.toggle(key="rb_runs_bg").set_value(True)
    at.run()


def _until_done(at, limit=240):
    t0 = time.time()
    while not at.session_state["robustness"]["runs"]:
        assert time.time() - t0 < limit, "the background study did not finish"
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
        assert not [e.value for e in at.error], [e.value for e in at.error]


def test_background_study_finishes_and_a_new_session_reattaches(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSENS_STUDY_DIR", str(tmp_path))
    monkeypatch.setattr(BG, "REGISTRY", BG.Registry(max_running=1))
    at = open_page(PAGE, timeout=240)
    _tiny(at)
    at.button(key="rb_runs_run").click()
    at.run()
    assert not at.exception, at.exception
    (sid,) = at.session_state[BG.STUDIES_KEY]
    owner = at.session_state[BG.OWNER_KEY]
    assert at.query_params[BG.OWNER_KEY] == [owner] or at.query_params[BG.OWNER_KEY] == owner
    _until_done(at)
    (r,) = at.session_state["robustness"]["runs"].values()
    assert len(r.units) == 3
    assert any("prob_CNN" in df.value.columns for df in at.dataframe)  # the result is shown
    study = BG.REGISTRY.find(sid, owner)
    assert study is not None and not study.running and study.units_done() == 3
    assert sorted(p.name for p in (tmp_path / sid).glob("*.npz")) == \
        ["run0_fold0.npz", "run0_fold1.npz", "run1_fold0.npz"]

    # a reload: a new session whose URL carries the owner token; same settings -> same study
    again = open_page(PAGE, timeout=240, state={BG.OWNER_KEY: owner})
    _tiny(again)
    assert not again.exception, again.exception
    (r2,) = again.session_state["robustness"]["runs"].values()  # no button pressed
    assert r2 is r and len(BG.REGISTRY._studies) == 1
    assert any("finished in the background" in c.value for c in again.caption)

    # another owner (no token in its URL) does not see the study
    other = open_page(PAGE, timeout=240)
    _tiny(other)
    assert not other.session_state["robustness"]["runs"]
    assert BG.REGISTRY.find(sid, other.session_state[BG.OWNER_KEY]) is None


def test_registry_bounds_running_studies_and_ownership(tmp_path, monkeypatch):
    import threading

    from nnsens_core.errors import NnsensError
    monkeypatch.setenv("NNSENS_STUDY_DIR", str(tmp_path))
    reg = BG.Registry(max_running=1)
    gate = threading.Event()
    a = reg.start("a" * 16, "alice", 2, lambda store: gate.wait(10) and "A")
    assert reg.start("a" * 16, "bob", 2, lambda store: "never") is a  # joins, no second run
    try:
        reg.start("b" * 16, "alice", 1, lambda store: "B")
        raise AssertionError("a second running study was accepted")
    except NnsensError as exc:
        assert "limit is 1" in str(exc)
    assert reg.find("a" * 16, "carol") is None and reg.find("a" * 16, "bob") is a
    gate.set()
    a.thread.join(10)
    assert a.result == "A" and not a.running
    boom = reg.start("c" * 16, "alice", 1, lambda store: 1 / 0)
    boom.thread.join(10)
    assert boom.error == "division by zero"
