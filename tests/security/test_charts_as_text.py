"""User-provided names in charts are text (issue 11): Plotly renders a subset of HTML in titles,
category tick labels, legends and hover text, so a CSV column or a class folder named
``<a href=...>`` would become a live link in a figure. Every page shows figures through
``ui.widgets.show_chart`` (``ui.plots.safe_figure`` escapes every string)."""
import json
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from ui.plots import safe_figure

ROOT = Path(__file__).resolve().parents[2]
LINK = '<a href="https://evil.example">click</a>'
IMG = '<img src=x onerror=alert(1)>'


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _live_tags(spec_json: str) -> list[str]:
    """Markup Plotly would render, other than nnsens's own formatting tags."""
    tags = [t for s in _strings(json.loads(spec_json)) for t in re.findall(r"<\s*/?\s*([a-zA-Z]+)", s)]
    return [t for t in tags if t.lower() not in ("br", "b", "i", "sup", "sub", "extra")]


def test_safe_figure_escapes_user_text_and_keeps_formatting():
    fig = go.Figure(go.Bar(x=[LINK, "A&B", "plain"], y=[1, 2, 3], name=IMG,
                           hovertemplate="%{x}<br>%{y}<extra></extra>", text=np.array([LINK, "b", "c"])))
    fig.update_layout(title=f"S1 of {LINK}<br><sup>note</sup>", xaxis_title=IMG)
    out = safe_figure(fig)
    spec = out.to_json()
    assert _live_tags(spec) == [], _live_tags(spec)
    assert list(out.data[0].x) == ['&lt;a href="https://evil.example"&gt;click&lt;/a&gt;', "A&amp;B", "plain"]
    assert "<br><sup>note</sup>" in out.layout.title.text and out.data[0].hovertemplate.endswith("<extra></extra>")
    np.testing.assert_array_equal(out.data[0].y, [1, 2, 3])  # numbers untouched
    assert _live_tags(fig.to_json()), "the unescaped figure has live tags (the test can fail)"


def test_pages_show_figures_only_through_show_chart():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in [*ROOT.glob("pages/*.py"), *ROOT.glob("ui/*.py"), ROOT / "app.py"]
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\.plotly_chart\(", line) and "where.plotly_chart(safe_figure(" not in line
                 and not line.lstrip().startswith(('"""', "#", "``"))]
    assert offenders == [], offenders


def _chart_specs(at) -> list[str]:
    return [el.proto.spec for el in at.get("plotly_chart")]


@pytest.mark.slow
def test_html_feature_and_class_names_render_as_text_in_charts(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from nnsens_core.data import ImageData, TabularData, demo_tabular
    from nnsens_core.phantom import demo_images
    from tests.app.app_pages import APP
    from tests.uploads import uploaded_paper_mlp
    from ui._streamlit_internals import keep_router_in_apptest

    keep_router_in_apptest(monkeypatch)
    demo = demo_tabular()
    names = tuple([LINK, IMG] + list(demo.feature_names[2:]))
    tab = TabularData(demo.X, demo.y, names, demo.target_name, "evil.csv")
    phantom = demo_images("test", n=6)
    imgs = ImageData(phantom.images, phantom.labels, phantom.class_names, phantom.masks, "evil.zip")
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["uploads"] = {"tabular_data": {"evil.csv": tab},
                                   "tabular_model": {"model.pt": uploaded_paper_mlp(3)},
                                   "image_data": {"evil.zip": imgs}, "image_model": {}}
    at.session_state["sel_tabular_data"] = "evil.csv"
    at.session_state["sel_tabular_model"] = "model.pt"
    at.switch_page("pages/sobol.py")
    at.run()
    at.select_slider(key="sobol_n").set_value(128)
    at.button(key="sobol_run").click().run()
    assert not at.exception, at.exception
    specs = _chart_specs(at)
    assert specs and any("evil.example" in s for s in specs), "the Sobol charts show the names"
    for s in specs:
        assert _live_tags(s) == [], _live_tags(s)
    # class names come from the model; an uploaded model whose class names are markup
    from nnsens_core.zoo import LoadedModel
    demo_cnn = __import__("nnsens_core.demos", fromlist=["x"]).load_demo_cnn("vgg16-phantom", "cpu")
    evil_classes = (LINK, IMG, "regular")
    evil = LoadedModel(demo_cnn.module, demo_cnn.spec.replace(class_names=evil_classes, name="m.pt"), "")
    imgs2 = ImageData(phantom.images, phantom.labels, evil_classes, phantom.masks, "evil2.zip")
    at.session_state["uploads"]["image_model"]["m.pt"] = evil
    at.session_state["uploads"]["image_data"]["evil2.zip"] = imgs2
    at.session_state["sel_image_model"] = "m.pt"
    at.session_state["sel_image_data"] = "evil2.zip"
    at.switch_page("pages/saliency.py")
    at.run()
    at.multiselect(key="sal_methods").set_value(["gradient"])
    at.run()
    assert not at.exception, at.exception
    specs = _chart_specs(at)
    assert specs and any("evil.example" in s for s in specs), "the probability chart shows the names"
    for s in specs:
        assert _live_tags(s) == [], _live_tags(s)
