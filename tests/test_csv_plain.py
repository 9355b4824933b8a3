"""data.load_csv reads small plain-number CSVs without pandas; the values equal pandas' reading."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnsens_core import data as D
from nnsens_core.resources import pima_csv


def _pandas(raw: bytes, target=None) -> D.TabularData:
    import io
    df = pd.read_csv(io.BytesIO(raw))
    return D.tabular_from_frame(df, target or df.columns[-1], "x")


def _same(a: D.TabularData, b: D.TabularData) -> None:
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.feature_names == b.feature_names and a.target_name == b.target_name


def test_shipped_pima_is_read_plainly_and_equals_pandas():
    raw = pima_csv().read_bytes()
    assert D._plain_csv(raw) is not None
    _same(D.load_csv(pima_csv()), _pandas(raw))
    _same(D.load_csv(raw, target="Glucose"), _pandas(raw, "Glucose"))


def test_assorted_numbers_equal_pandas():
    rng = np.random.default_rng(3)
    cells = ["0", "-7", "+3", "1.", ".5", "-0.000123", "12345.678901234", "6.02e23", "1E-5", "2.5e+3",
             "999999999999999", "0.1", "3.3333333333333"]
    lines = ["a,b,c,y"] + [",".join(rng.choice(cells, 3)) + f",{i % 2}" for i in range(200)]
    raw = ("\n".join(lines) + "\n\n").encode()
    assert D._plain_csv(raw) is not None
    _same(D.load_csv(raw), _pandas(raw))


@pytest.mark.parametrize("raw", [
    b"a,b,y\n1,2,0\n3,,1\n",            # empty cell: pandas reads NaN and names it
    b"a,a,y\n1,2,0\n3,4,1\n",           # duplicate header
    b"a,b,y\n1,x,0\n3,4,1\n",           # not a number
    b"a,b,y\n1,0.12345678901234567,0\n3,4,1\n",  # 17 digits: pandas' own parser decides
    b'"a",b,y\n1,2,0\n3,4,1\n',         # quoting
    b"a,b,y\n1,2\n3,4,1\n",             # short row
    b"a,b,y\n",                         # no rows
])
def test_anything_else_goes_through_pandas(raw):
    assert D._plain_csv(raw) is None
