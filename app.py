"""nnsens dashboard: the router (st.navigation) and the shared sidebar.

Run with ``streamlit run app.py``. Pages live in ``pages/`` and stay thin:
widgets -> config -> nnsens_core -> plotly/PIL rendering.
"""
from __future__ import annotations

import streamlit as st

from ui import state
from ui._streamlit_internals import keep_widget_values

st.set_page_config(page_title="nnsens", page_icon="🧠", layout="wide")

# (file, title, icon, which sidebar selectors the page uses: "tabular", "image" or "both")
PAGES = [
    ("pages/model_data.py", "Model & data", ":material/database:", "both"),
    ("pages/sobol.py", "Global sensitivity (Sobol)", ":material/query_stats:", "tabular"),
    ("pages/local_sensitivity.py", "Local sensitivity", ":material/grid_on:", "image"),
    ("pages/activation_max.py", "Activation maximization", ":material/auto_awesome:", "image"),
    ("pages/saliency.py", "Saliency comparison", ":material/compare:", "image"),
    ("pages/case.py", "Read a case", ":material/clinical_notes:", "image"),
    ("pages/robustness.py", "Robustness (masks, 3-D)", ":material/verified:", "image"),
    ("pages/landscape.py", "Loss landscape", ":material/landscape:", "tabular"),
]

pages = {p: st.Page(p, title=t, icon=i, default=(k == 0)) for k, (p, t, i, _) in enumerate(PAGES)}
current = st.navigation(list(pages.values()))
kind = next(k for p, _, _, k in PAGES if pages[p] is current or pages[p].title == current.title)
state.sidebar(show_tabular=kind in ("tabular", "both"), show_images=kind in ("image", "both"))
try:
    current.run()
finally:  # also after st.stop() / st.rerun(): the settings of widgets not drawn now survive
    keep_widget_values(st.session_state)
