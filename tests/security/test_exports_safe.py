"""Exported CSVs neutralise formula cells (issue 11): a text cell starting with = + - @ (or a tab or
carriage return) is written with a leading ' so a spreadsheet shows it instead of running it;
numbers stay numbers. One core function (``nnsens_core._results.csv_bytes``) builds every CSV the
dashboard offers and the CLI writes."""
import csv
import io

import pandas as pd
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from nnsens_core._results import csv_bytes, safe_cell
from nnsens_core.data import TabularData, demo_tabular
from tests.app.app_pages import APP
from ui._streamlit_internals import keep_router_in_apptest

EVIL = ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(A1:A2)", "\tx"]


def test_csv_bytes_prefixes_formula_cells_and_keeps_numbers():
    df = pd.DataFrame({"name": EVIL + ["plain"], "value": [-1.5, 2, 3, 4, 5, 6]},
                      index=pd.Index([f"=r{i}" for i in range(6)], name="=row"))
    df.columns = ["=col", "value"]
    back = pd.read_csv(io.BytesIO(csv_bytes(df)), index_col=0, keep_default_na=False)
    assert list(back.iloc[:, 0]) == ["'" + s for s in EVIL] + ["plain"]
    assert back["value"].tolist() == [-1.5, 2, 3, 4, 5, 6]          # numbers, still numbers
    assert list(back.columns) == ["'=col", "value"] and back.index.name == "'=row"
    assert all(str(i).startswith("'=") for i in back.index)
    assert safe_cell("\rx") == "'\rx" and safe_cell(-3) == -3 and safe_cell("a=b") == "a=b"
    plain = csv_bytes(pd.DataFrame({"a": [1, 2]}), index=False)
    assert plain == b"a\n1\n2\n"


@pytest.mark.slow
def test_sobol_page_bounds_download_is_neutralised(monkeypatch):
    keep_router_in_apptest(monkeypatch)
    offered = {}
    original = streamlit.download_button

    def record(label, data, file_name=None, *args, **kwargs):
        offered[file_name] = data
        return original(label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", record)
    demo = demo_tabular()
    names = (EVIL[0],) + demo.feature_names[1:]
    evil = TabularData(demo.X, demo.y, names, demo.target_name, "evil.csv")
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["uploads"] = {"tabular_data": {"evil.csv": evil}, "tabular_model": {},
                                   "image_data": {}, "image_model": {}}
    at.session_state["sel_tabular_data"] = "evil.csv"
    at.switch_page("pages/sobol.py")
    at.run()
    assert not at.exception, at.exception
    text = offered["sobol_bounds.csv"]
    text = text.decode() if isinstance(text, bytes) else text
    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
    assert not any(c.startswith(("=", "+", "@")) for c in cells), text
    assert "'=HYPERLINK" in text
