"""Uploads are bounded before they are unpacked or decoded (issue 11: ZIP and image bombs)."""
import io
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from nnsens_core import data as nd
from nnsens_core.errors import NnsensError


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")
    return buf.getvalue()


def _claim_size(png: bytes, w: int, h: int) -> bytes:
    """The same PNG whose header claims ``w`` x ``h`` pixels (an image bomb: tiny file, huge image)."""
    ihdr = png[12:29]
    body = ihdr[:4] + struct.pack(">II", w, h) + ihdr[12:]
    return png[:12] + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF) + png[33:]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def test_image_bomb_is_refused_from_its_header_before_decoding():
    t0 = time.perf_counter()
    for w, h in ((10000, 8000), (30000, 30000)):   # ours, then also Pillow's own guard
        bomb = _claim_size(_png(4, 4), w, h)
        with pytest.raises(NnsensError, match=r"'bomb.png' .*over the 50 MP limit per image"):
            nd.load_image_bytes(bomb, name="bomb.png")
    assert time.perf_counter() - t0 < 1.0
    ok = nd.load_image_bytes(_png(4, 4))
    assert ok.shape == (3, 4, 4)


def test_an_upload_has_a_pixel_budget_across_images(monkeypatch):
    monkeypatch.setattr(nd, "MAX_UPLOAD_PIXELS", 40)  # three 4x4 images = 48 pixels
    z = _zip({f"{c}/{i}.png": _png(4, 4) for c in ("a", "b") for i in range(2)})
    with pytest.raises(NnsensError, match="more than 0 MP together"):
        nd.load_image_zip(z)


def test_zip_bomb_is_refused_before_reading_members():
    zeros = b"\0" * (8 * 2**20)            # 8 MiB that deflate to ~8 KiB
    z = _zip({"a/x.png": _png(4, 4), "b/y.png": zeros})
    assert len(z) < 64 * 1024
    with pytest.raises(NnsensError, match=r"'b/y.png' is compressed \d+:1 \(a decompression bomb\?\)"):
        nd.load_image_zip(z)
    npz = io.BytesIO()
    np.savez_compressed(npz, X=np.zeros((2**20, 2)), y=np.zeros(2**20))
    with pytest.raises(NnsensError, match="decompression bomb"):
        nd.load_npz(npz.getvalue())


def test_zip_member_and_total_limits(monkeypatch):
    members = {f"{c}/{i}.png": _png(4, 4) for c in ("a", "b") for i in range(2)}
    z = _zip(members)
    assert len(nd.load_image_zip(z)) == 4
    monkeypatch.setattr(nd, "MAX_ZIP_MEMBER", 10)
    with pytest.raises(NnsensError, match="over the 0 MiB limit per file"):
        nd.load_image_zip(z)
    monkeypatch.setattr(nd, "MAX_ZIP_MEMBER", 2**20)
    monkeypatch.setattr(nd, "MAX_ZIP_TOTAL", 100)
    with pytest.raises(NnsensError, match="unpacks to .* GiB, over the"):
        nd.load_image_zip(z)
