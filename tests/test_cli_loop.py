"""``nnsens loop`` end to end: a phantom MP4 and a DICOM (written with pydicom here) through a tiny
random CNN; the outputs read back and never hold the patient's identifiers unless asked for."""
import io
import json

import numpy as np

from nnsens_core import sequences as sq
from nnsens_core.__main__ import main
from tests.test_sequences import NAME, PID, dicom_bytes


def _args(weights, file, out, *extra):
    return ["loop", str(file), "--model", weights, "--arch", "vgg16-small", "--arch-kwargs",
            '{"width": 0.0625}', "--class-names", "regular,covid,pneumonia", "--out", str(out),
            "--device", "cpu", *extra]


def test_loop_writes_maps_predictions_summary_and_videos(tiny_vgg_weights, tmp_path, capsys):
    seq, _ = sq.phantom_cine(n_frames=8, size=(48, 64), seed=3)
    src = tmp_path / "clip.mp4"
    src.write_bytes(sq.export_loop(seq, fmt="mp4", upscale=1))
    out = tmp_path / "out"
    assert main(_args(tiny_vgg_weights, src, out, "--method", "occlusion", "--options",
                      '{"window": 16, "stride": 16}', "--batch-size", "3")) == 0
    frames = json.loads((out / "frames.json").read_text())
    assert len(frames["frames"]) == 8 and frames["class_names"] == ["regular", "covid", "pneumonia"]
    row = frames["frames"][0]
    assert row["predicted"] in frames["class_names"] and abs(
        sum(row[f"p({c})"] for c in frames["class_names"]) - 1) < 1e-4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "occlusion" and summary["config"]["method_config"]["window"] == 16
    assert "file" not in summary and summary["n_frames"] == 8  # file names may carry PHI: opt-in
    assert abs(sum(summary["summary"]["class_fractions"].values()) - 1) < 1e-9
    maps = np.load(out / "maps.npz")
    assert maps["maps"].shape == (8, 64, 64) and maps["maps_original"].shape == (8, 48, 64)
    for fmt in ("mp4", "gif"):
        back = sq.load_sequence((out / f"overlay.{fmt}").read_bytes(), f"overlay.{fmt}")
        assert len(back) == 8 and back.channels == 3
    assert "predicted per frame" in capsys.readouterr().out


def test_dicom_identifiers_only_with_the_flag(tiny_vgg_weights, tmp_path, capsys):
    raw = (sq.phantom_cine(n_frames=4, size=(40, 48), seed=1)[0].frames[:, 0] * 4095).round()
    src = tmp_path / "case.dcm"
    src.write_bytes(dicom_bytes(raw.astype(np.uint16)))
    secret = (NAME.encode(), PID.encode())
    hidden, shown = tmp_path / "hidden", tmp_path / "shown"
    assert main(_args(tiny_vgg_weights, src, hidden, "--formats", "gif")) == 0
    assert "patient identifiers present and hidden" in capsys.readouterr().out
    files = sorted(p.name for p in hidden.iterdir())
    assert files == ["frames.csv", "frames.json", "maps.npz", "overlay.gif", "summary.json"]
    for p in hidden.iterdir():
        blob = p.read_bytes()
        if p.suffix == ".npz":
            z = np.load(io.BytesIO(blob))
            blob = b"".join(np.asarray(z[k]).tobytes() for k in z.files)
        assert not any(s in blob for s in secret), p.name
    summary = json.loads((hidden / "summary.json").read_text())
    assert summary["sequence"]["pixel_spacing_mm"] == [0.3, 0.4]
    assert summary["sequence"]["identifiers_present"] is True
    assert main(_args(tiny_vgg_weights, src, shown, "--formats", "gif",
                      "--include-identifiers")) == 0
    assert json.loads((shown / "summary.json").read_text())["identifiers"]["PatientID"] == PID
    assert NAME.encode() in (shown / "overlay.gif").read_bytes()
    assert "identifiers" in np.load(shown / "maps.npz").files


def test_bad_inputs_are_one_line_exit_2(tiny_vgg_weights, tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    assert main(_args(tiny_vgg_weights, junk, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "junk.mp4" in err and len(err.strip().splitlines()) == 1
    clip = tmp_path / "clip.gif"
    clip.write_bytes(sq.export_loop(sq.phantom_cine(n_frames=6, size=(40, 48))[0], fmt="gif",
                                    upscale=1))
    assert main(_args(tiny_vgg_weights, clip, tmp_path / "o", "--max-frames", "4")) == 2
    assert "6 frames, over the limit of 4" in capsys.readouterr().err
    assert main(_args(tiny_vgg_weights, clip, tmp_path / "o", "--options", '{"windw": 3}',
                      "--method", "occlusion")) == 2
    assert "windw" in capsys.readouterr().err
    assert main(_args(tiny_vgg_weights, clip, tmp_path / "o", "--formats", "avi")) == 2
    assert "avi" in capsys.readouterr().err
