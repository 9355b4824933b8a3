"""Uploads are bounded before they are unpacked or decoded (issue 11: ZIP and image bombs)."""
import io
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest

from nnsens_core import data as nd
from nnsens_core.errors import NnsensError
from tests.uploads import png_bytes, zip_bytes

GREY_4X4 = png_bytes(np.full((4, 4), 128, np.uint8))


def _deflated(members: dict[str, bytes]) -> bytes:
    return zip_bytes(members, zipfile.ZIP_DEFLATED)


def _claim_size(png: bytes, w: int, h: int) -> bytes:
    """The same PNG whose header claims ``w`` x ``h`` pixels (an image bomb: tiny file, huge image)."""
    ihdr = png[12:29]
    body = ihdr[:4] + struct.pack(">II", w, h) + ihdr[12:]
    return png[:12] + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF) + png[33:]


def test_image_bomb_is_refused_from_its_header_before_decoding():
    t0 = time.perf_counter()
    for w, h in ((10000, 8000), (30000, 30000)):   # ours, then also Pillow's own guard
        bomb = _claim_size(GREY_4X4, w, h)
        with pytest.raises(NnsensError, match=r"'bomb.png' .*over the 50 MP limit per image"):
            nd.load_image_bytes(bomb, name="bomb.png")
    assert time.perf_counter() - t0 < 1.0
    ok = nd.load_image_bytes(GREY_4X4)
    assert ok.shape == (3, 4, 4)


def test_an_upload_has_a_pixel_budget_across_images(monkeypatch):
    monkeypatch.setattr(nd, "MAX_UPLOAD_PIXELS", 40)  # three 4x4 images = 48 pixels
    z = _deflated({f"{c}/{i}.png": GREY_4X4 for c in ("a", "b") for i in range(2)})
    with pytest.raises(NnsensError, match="more than 0 MP together"):
        nd.load_image_zip(z)


def test_zip_bomb_is_refused_before_reading_members():
    zeros = b"\0" * (8 * 2**20)            # 8 MiB that deflate to ~8 KiB
    z = _deflated({"a/x.png": GREY_4X4, "b/y.png": zeros})
    assert len(z) < 64 * 1024
    with pytest.raises(NnsensError, match=r"'b/y.png' is compressed \d+:1 \(a decompression bomb\?\)"):
        nd.load_image_zip(z)
    npz = io.BytesIO()
    np.savez_compressed(npz, X=np.zeros((2**20, 2)), y=np.zeros(2**20))
    with pytest.raises(NnsensError, match="decompression bomb"):
        nd.load_npz(npz.getvalue())


def test_zip_member_and_total_limits(monkeypatch):
    members = {f"{c}/{i}.png": GREY_4X4 for c in ("a", "b") for i in range(2)}
    z = _deflated(members)
    assert len(nd.load_image_zip(z)) == 4
    monkeypatch.setattr(nd, "MAX_ZIP_MEMBER", 10)
    with pytest.raises(NnsensError, match="over the 0 MiB limit per file"):
        nd.load_image_zip(z)
    monkeypatch.setattr(nd, "MAX_ZIP_MEMBER", 2**20)
    monkeypatch.setattr(nd, "MAX_ZIP_TOTAL", 100)
    with pytest.raises(NnsensError, match="unpacks to .* GiB, over the"):
        nd.load_image_zip(z)
