"""The "Read a case" page for a cine loop or a DICOM series: one method over every frame (batched,
with a cost line and progress), the loop viewer (:func:`ui.cine_views.sequence_view`: play, frame
slider, per-frame predictions, mean map, annotated MP4 / GIF) and a case report of the frame shown.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from nnsens_core import budget as B
from nnsens_core import report as RP
from nnsens_core.saliency import registry as R
from nnsens_core.sequences import Sequence, explain_frames

from . import saliency_views as V
from .cine_views import sequence_view
from .widgets import Progress, cost_line, guard, plain, within_budget

LOOP_METHODS = ("gradcam", "gradient", "occlusion")


def _config(method: str, seed: int, spatial, lm=None):
    """The registry's default for frames of the model's ``spatial`` size (occlusion's window and
    stride scale with the side; steps with the model's cost), with the session's seed."""
    cfg = R.default_config(method, spatial, lm)
    return dataclasses.replace(cfg, seed=seed) if "seed" in {f.name for f in
                                                             dataclasses.fields(cfg)} else cfg


def loop_case(seq: Sequence, loop_id: str, lm, model_id: str, device, seed: int, store: dict,
              chance=None) -> None:
    """Explain ``seq`` (identified by ``loop_id``, the hash of its bytes) frame by frame with the
    model ``lm`` and show it; results are kept in ``store`` per model, loop, method and settings."""
    spec = lm.spec
    avail = [m for m in R.names()]
    default = [m for m in LOOP_METHODS if m in avail][0]
    c1, c2 = st.columns([2, 1])
    method = c1.selectbox("Method for every frame", avail, index=avail.index(default),
                          format_func=V.label, key="case_loop_method",
                          help=R.get(default).description)
    batch = int(c2.number_input("Frames per batch", 1, 64, 8, key="case_loop_batch"))
    st.caption(f"**What this shows:** {R.get(method).description}.")
    cfg = _config(method, seed, tuple(spec.input_shape[1:]), lm)
    key = (model_id, loop_id, method, repr(cfg))
    loops = store.setdefault("loops", {})
    fm = loops.get(key)
    if fm is None:
        est = B.compare(lm, tuple(spec.input_shape), [method], {method: cfg}, len(seq))
        ok = cost_line(est)
        if st.button(f"Explain all {len(seq)} frames", type="primary", key="case_loop_run",
                     disabled=not ok):
            with guard("Explaining the loop"), within_budget(est):
                bar = Progress(f"{V.label(method)} on {len(seq)} frames")
                loops[key] = explain_frames(lm, seq, method, batch_size=batch, progress=bar,
                                            config=cfg, device=device)
                bar.done()
            if key in loops:
                st.rerun()  # redraw without the button (the maps are kept in the session)
    view_key = f"case_cine|{loop_id[:16]}"
    sequence_view(seq, frame_maps=fm, key=view_key)
    if fm is None:
        return

    def _report(fmt: str) -> bytes:
        i = int(st.session_state.get(f"{view_key}_frame", 0))
        rep = RP.case_report(
            seq.frames[i], lm, fm.probs[i], {method: fm.frame_original(i)},
            case=f"cine loop ({seq.kind}), frame {i + 1} of {len(seq)}", explained=int(fm.targets[i]),
            settings={method: cfg, "loop": {"frames": len(seq), "fps": round(seq.fps, 3),
                                            "majority": fm.summary()["majority"]}},
            chance=chance)
        return rep.to_pdf() if fmt == "pdf" else rep.to_html().encode()

    st.markdown("**Case report of the frame shown** (the frame, its prediction and map, the "
                "loop's majority class; no patient identifiers)")
    d1, d2 = st.columns(2)
    d1.download_button("Case report (PDF)", lambda: _report("pdf"), "loop_frame_report.pdf",
                       "application/pdf", key="case_loop_pdf", on_click="ignore")
    d2.download_button("Case report (HTML)", lambda: _report("html"), "loop_frame_report.html",
                       "text/html", key="case_loop_html", on_click="ignore")
    st.caption(plain(f"Computed in {fm.seconds:.1f} s."))
