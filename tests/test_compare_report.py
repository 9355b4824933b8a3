"""compare.markdown_table: the README's localization table from metrics.json."""
import re

import pytest

from nnsens_core.saliency.io import markdown_table
from nnsens_core.errors import NnsensError


def _info():
    return {"methods": {
        "gradcam": {"iou": 0.3, "pointing": 0.5, "per_class": {
            "covid": {"iou": 0.5, "pointing": 0.9}, "regular": {"iou": 0.1, "pointing": 0.1}}},
        "occlusion": {"iou": 0.2, "pointing": 0.75, "per_class": {
            "covid": {"iou": 0.25, "pointing": 1.0}, "regular": {"iou": None, "pointing": 0.0}}}}}


def test_markdown_table_rows_columns_and_bold_best():
    text = markdown_table(_info(), ["covid", "regular"], {"covid": "B-lines (covid)"})
    lines = text.strip().splitlines()
    assert lines[0] == ("| method | B-lines (covid): IoU / pointing | regular: IoU / pointing | "
                        "all classes: IoU / pointing |")
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| Grad-CAM | **0.50** / 0.90 | **0.10** / **0.10** | **0.30** / 0.50 |"
    assert lines[3] == "| Occlusion | 0.25 / **1.00** | n/a / 0.00 | 0.20 / **0.75** |"
    # classes default to those found in the metrics, in order
    assert "covid" in markdown_table(_info()).splitlines()[0]


def test_markdown_table_needs_methods():
    with pytest.raises(NnsensError, match="no methods"):
        markdown_table({"methods": {}})


def test_markdown_table_shows_user_class_names_as_text():
    info = {"methods": {"gradient": {"iou": 0.5, "pointing": 1.0, "per_class": {
        '<a href="https://evil.example">x</a>': {"iou": 0.5, "pointing": 1.0}, "a|b": {"iou": 0.1, "pointing": 0.0}}}}}
    table = markdown_table(info)
    head = table.splitlines()[0]
    assert "<a" not in table and "&lt;a href=" in head
    assert len(re.findall(r"(?<!\\)\|", head)) == 5 and "a\\|b" in head  # no extra column
