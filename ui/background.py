"""Long studies handed from a page to a background thread, run through the executor with a results
store, so that their progress survives the page's reruns and a reload re-attaches to them.

* A study is identified by the **fingerprint of its content** (model, data, selected inputs,
  settings: ``nnsens_core.studies_dist.study_id``), never by a name a user gives. Its units are
  written as they finish to ``<root>/<fingerprint>/`` (:class:`nnsens_core.executor.ResultStore`),
  so progress is the number of finished units on disk, and a study started again after a server
  restart loads the finished units instead of recomputing them.
* The thread runs on the server: it outlives the script run (and the browser tab) that started it.
  It never calls Streamlit; the page polls it (``st.fragment(run_every=...)``).
* Many users: at most :data:`MAX_RUNNING` studies run at once on a server (``NNSENS_MAX_STUDIES``,
  default 2); a start beyond that is refused with a message, never queued silently.
* Ownership: a session may re-attach only to studies it started. The owner is a random token kept in
  ``st.session_state`` and mirrored in the page URL (``?study_owner=...``); the server-side
  registry maps each study to the tokens that started it.

What "reload" means here: Streamlit keeps a session (and its ``st.session_state``) only while its
websocket reconnects (a network blip, the laptop waking up, switching pages and back). A browser
reload (F5) or a new tab opens a **new** session with empty state; it re-attaches because the URL
still carries the owner token, and the same settings + data + model give the same fingerprint. A
different browser without the token (or a URL without it) cannot see the study, but starting the
same study there joins the running one (same content, same results) instead of computing it twice.
"""
from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnsens_core.errors import NnsensError

MAX_RUNNING = int(os.environ.get("NNSENS_MAX_STUDIES", "2"))
OWNER_KEY = "study_owner"
"""The session-state key and the URL query parameter of the owner token."""
STUDIES_KEY = "background_studies"
"""``st.session_state[STUDIES_KEY]``: the ids of the studies this session started."""


def root() -> Path:
    """Where the stores live: ``$NNSENS_STUDY_DIR`` or ``<tmp>/nnsens-studies``."""
    return Path(os.environ.get("NNSENS_STUDY_DIR") or Path(tempfile.gettempdir()) / "nnsens-studies")


@dataclass
class Study:
    """A study running (or finished) in a background thread."""
    id: str
    store: Path
    total: int  # units
    label: str
    owners: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: Any = None
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    def units_done(self) -> int:
        """Finished units: the unit files in the store (each written when its unit completes)."""
        try:
            return min(self.total, sum(1 for p in self.store.glob("*.npz")))
        except OSError:
            return 0


class Registry:
    """The server's studies (one per process, shared by every session; thread-safe)."""

    def __init__(self, max_running: int = MAX_RUNNING):
        self.max_running = max_running
        self._studies: dict[str, Study] = {}
        self._lock = threading.Lock()

    def running(self) -> int:
        with self._lock:
            return sum(s.running for s in self._studies.values())

    def find(self, study_id: str, owner: str) -> Study | None:
        """The study ``study_id`` if ``owner`` started it, else None."""
        with self._lock:
            s = self._studies.get(study_id)
            return s if s is not None and owner in s.owners else None

    def start(self, study_id: str, owner: str, total: int, run: Callable[[Path], Any],
              label: str = "study") -> Study:
        """Start ``run(store_dir)`` in a background thread, or join the same study when it is
        already here (running, or finished without error): no second computation. Refused when
        :attr:`max_running` studies run already."""
        if not owner:
            raise NnsensError("no owner token; reload the page")
        with self._lock:
            s = self._studies.get(study_id)
            if s is not None and s.error is None:
                s.owners.add(owner)
                return s
            busy = sum(x.running for x in self._studies.values())
            if busy >= self.max_running:
                raise NnsensError(f"{busy} background studies are running on this server (the limit "
                                  f"is {self.max_running}); wait for one to finish, or run this one "
                                  "here (turn off 'In the background')")
            s = Study(study_id, root() / study_id, int(total), label, {owner})
            s.thread = threading.Thread(target=self._work, args=(s, run), daemon=True,
                                        name=f"nnsens-study-{study_id[:8]}")
            self._studies[study_id] = s
        s.thread.start()
        return s

    @staticmethod
    def _work(s: Study, run: Callable[[Path], Any]) -> None:
        try:
            s.result = run(s.store)
        except Exception as exc:  # noqa: BLE001 - reported to the page as one line
            lines = str(exc).strip().splitlines()
            s.error = (lines[0] if lines else type(exc).__name__)[:500]
        finally:
            s.finished = time.time()

    def forget(self, study_id: str) -> None:
        with self._lock:
            s = self._studies.get(study_id)
            if s is not None and not s.running:
                del self._studies[study_id]


REGISTRY = Registry()


def owner_token(st) -> str:
    """This session's owner token: from its state, else from the URL (a reloaded tab), else new;
    kept in both."""
    tok = st.session_state.get(OWNER_KEY) or st.query_params.get(OWNER_KEY)
    if not tok or not isinstance(tok, str) or len(tok) > 64 or not tok.replace("-", "").replace("_", "").isalnum():
        tok = secrets.token_urlsafe(16)
    st.session_state[OWNER_KEY] = tok
    if st.query_params.get(OWNER_KEY) != tok:
        st.query_params[OWNER_KEY] = tok
    return tok


def start(st, study_id: str, total: int, run: Callable[[Path], Any], label: str) -> Study:
    """Start (or join) a study for this session and remember it in its state."""
    s = REGISTRY.start(study_id, owner_token(st), total, run, label)
    ids = st.session_state.setdefault(STUDIES_KEY, [])
    if study_id not in ids:
        ids.append(study_id)
    return s


def attached(st, study_id: str) -> Study | None:
    """The study ``study_id`` if this session (or its owner token) started it."""
    return REGISTRY.find(study_id, owner_token(st))


def show_progress(st, s: Study, every: float = 1.0) -> None:
    """A progress bar of ``s`` that refreshes itself every ``every`` s while it runs, and reruns the
    page once when it finishes (so the page shows the result)."""

    @st.fragment(run_every=every if s.running else None)
    def panel():
        wait = f"bg_wait|{s.id}"
        if s.running:
            st.session_state[wait] = True
            done = s.units_done()
            st.progress(done / max(s.total, 1),
                        text=f"{s.label}: {done} of {s.total} units finished (in the background; "
                             f"{time.time() - s.started:.0f} s)")
        elif st.session_state.pop(wait, None):
            st.rerun(scope="app")  # it finished while this session watched: show the result
        elif s.error is None:
            st.caption(f"{s.label}: finished in the background ({s.total} units, "
                       f"{(s.finished or s.started) - s.started:.1f} s).")

    panel()
