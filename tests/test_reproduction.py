"""docs/reproduction.md is checked, not just written: every ```console block runs (in-process, in
document order, ``OUT/`` replaced by a temporary folder) and every line of the ```text block after
it must appear in the printed output, in order, with each number within the precision stated on the
block's "Expected output" line (``±0.002`` absolute, ``±5 %`` relative). A further ```text block
introduced by a line starting "Or, on" is an alternative output (same precision) that CPUs with
other float kernels print; the block passes when the output matches one of them. ```bash blocks
(full-size runs, data the project cannot ship) are not run, but every ``nnsens`` line in them must
parse."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nnsens_core.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduction.md"

# a number not glued to a name: "block1", "S1=", "features.13" and "act1[0]" stay text (exact match)
NUMBER = re.compile(r"(?<![A-Za-z_.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    """A ```console block: its commands and the expected output that follows it."""
    section: str
    line: int
    commands: list[str]
    expected: list[str] = field(default_factory=list)
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    alternatives: list[list[str]] = field(default_factory=list)  # "Or, on ..." outputs


@dataclass
class Doc:
    runs: list[Block]
    not_run: list[tuple[str, int, str]]  # (section, line, command) of ```bash blocks


def parse_tolerance(line: str) -> tuple[float, float]:
    """``Expected output (numbers to ±0.002 or ±5 %):`` -> (0.002, 0.05); none stated: exact."""
    abs_tol = rel_tol = 0.0
    for value, pct in re.findall(r"±\s*(\d+(?:\.\d+)?)\s*(%?)", line):
        if pct:
            rel_tol = float(value) / 100
        else:
            abs_tol = float(value)
    return abs_tol, rel_tol


def _commands(lines: list[str]) -> list[str]:
    return [ln[2:].strip() for ln in lines if ln.startswith("$ ")]


def parse_doc(text: str) -> Doc:
    """The console blocks (each with its expected output and precision) and the not-run commands."""
    lines = text.splitlines()
    runs: list[Block] = []
    not_run: list[tuple[str, int, str]] = []
    section, last_prose, i = "", "", 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("#"):
            section = ln.lstrip("#").strip()
        m = FENCE.match(ln)
        if not m:
            if ln.strip():
                last_prose = ln
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        body = lines[i + 1:j]
        if lang == "console":
            runs.append(Block(section, start + 1, _commands(body)))
        elif lang == "bash":
            not_run += [(section, start + 1, c) for c in _commands(body)]
        elif lang == "text" and last_prose.startswith("Expected output"):
            if not runs or runs[-1].expected:
                raise AssertionError(f"line {start + 1}: expected output without a console block")
            runs[-1].expected = [b for b in body if b.strip()]
            runs[-1].abs_tol, runs[-1].rel_tol = parse_tolerance(last_prose)
        elif lang == "text" and last_prose.startswith("Or, on"):
            if not runs or not runs[-1].expected:
                raise AssertionError(f"line {start + 1}: an alternative output without an expected one")
            runs[-1].alternatives.append([b for b in body if b.strip()])
        i, last_prose = j + 1, ""
    return Doc(runs, not_run)


def _split(line: str) -> tuple[list[str], list[float]]:
    """Text between the numbers (whitespace collapsed) and the numbers."""
    texts = [" ".join(t.split()) for t in NUMBER.split(line)]
    return texts, [float(x) for x in NUMBER.findall(line)]


def line_matches(expected: str, printed: str, abs_tol: float, rel_tol: float) -> bool:
    et, en = _split(expected)
    pt, pn = _split(printed)
    if et != pt or len(en) != len(pn):
        return False
    return all(abs(p - e) <= max(abs_tol, rel_tol * abs(e)) + 1e-12 for e, p in zip(en, pn))


def match_lines(expected: list[str], printed: str, abs_tol: float, rel_tol: float) -> list[str]:
    """Each expected line must match a printed line, in order; returns the ones that do not."""
    out = printed.splitlines()
    missing, k = [], 0
    for exp in expected:
        for j in range(k, len(out)):
            if line_matches(exp, out[j], abs_tol, rel_tol):
                k = j + 1
                break
        else:
            missing.append(exp)
    return missing


def run_command(command: str, out_dir: Path, capsys) -> str:
    """Run one ``$`` line of the document and return what it printed."""
    argv = [a.replace("OUT/", f"{out_dir}/") if a != "OUT" else str(out_dir)
            for a in shlex.split(command)]
    prog, args = argv[0], argv[1:]
    capsys.readouterr()
    if prog == "nnsens":
        rc = main(args)
        captured = capsys.readouterr()
        assert rc == 0, f"{command!r} exited {rc}: {captured.err}"
        return captured.out
    if prog == "python" and args[:1] == ["-c"]:
        exec(compile(args[1], "<docs/reproduction.md>", "exec"), {"__name__": "__main__"})
        return capsys.readouterr().out
    if prog == "cat":
        return "".join(Path(a).read_text() for a in args)
    if prog == "mkdir":
        for a in args:
            if a != "-p":
                Path(a).mkdir(parents=True, exist_ok=True)
        return ""
    raise AssertionError(f"the test does not know how to run {command!r}")


# --------------------------------------------------------------------------- the checker itself

def test_line_matching_is_strict_on_text_and_numbers():
    printed = "  Glucose                      S1=+0.5347 ±0.0668  ST=0.5867 ±0.0539"
    assert line_matches("Glucose S1=+0.535 ±0.067 ST=0.587 ±0.054", printed, 0.002, 0)
    assert not line_matches("Glucose S1=+0.545 ±0.067 ST=0.587 ±0.054", printed, 0.002, 0)  # wrong number
    assert not line_matches("BMI S1=+0.535 ±0.067 ST=0.587 ±0.054", printed, 0.002, 0)      # wrong text
    assert not line_matches("Glucose S1=+0.535 ±0.067", printed, 0.002, 0)                   # fewer numbers
    assert line_matches("max 3.3e-02 mean 1.26e-03", "max 3.317e-02  mean 1.264e-03", 0, 0.05)
    assert not line_matches("max 3.3e-02 mean 1.16e-03", "max 3.317e-02  mean 1.264e-03", 0, 0.05)
    assert match_lines(["a 1", "b 2"], "x\nb 2\na 1\n", 0, 0) == ["b 2"]  # order counts
    assert match_lines(["a 1", "b 2"], "a 1.0\nz\nb 2\n", 0, 0) == []


def test_tolerance_and_document_parsing():
    assert parse_tolerance("Expected output (numbers to ±0.002):") == (0.002, 0.0)
    assert parse_tolerance("Expected output (numbers to ±5 %):") == (0.0, 0.05)
    assert parse_tolerance("Expected output (exact):") == (0.0, 0.0)
    doc = parse_doc("## A\n\n```console\n$ nnsens x --out OUT/a\n```\n\nExpected output (±0.1):\n\n"
                    "```text\nk 1.0\n```\n\n```bash\n$ nnsens y\n```\n")
    assert [(b.section, b.commands, b.expected, b.abs_tol) for b in doc.runs] == \
        [("A", ["nnsens x --out OUT/a"], ["k 1.0"], 0.1)]
    assert doc.not_run == [("A", 13, "nnsens y")]
    alt = parse_doc("```console\n$ nnsens x\n```\n\nExpected output (±0.1):\n\n```text\nk 1.0\n```\n\n"
                    "Or, on CPUs with other float kernels:\n\n```text\nk 2.0\n```\n")
    assert alt.runs[0].expected == ["k 1.0"] and alt.runs[0].alternatives == [["k 2.0"]]


def test_the_document_is_complete():
    doc = parse_doc(DOC.read_text(encoding="utf-8"))
    assert len(doc.runs) >= 10 and doc.not_run
    for b in doc.runs:
        assert b.commands, f"line {b.line}: a console block without a $ command"
        assert b.expected, f"line {b.line} ({b.section}): a console block without expected output"
    text = DOC.read_text(encoding="utf-8")
    for fig in ("Figs. 1–4", "Figs. 5–10", "Fig. 13", "Figs. 11, 12, 14", "Figs. 15–16",
                "feature reduction", "PCA", "loss-landscape paper"):
        assert fig in text, fig


def test_full_size_and_own_data_commands_parse():
    parser = build_parser()
    for section, line, cmd in parse_doc(DOC.read_text(encoding="utf-8")).not_run:
        argv = shlex.split(cmd)
        if argv[0] == "nnsens":
            try:
                parser.parse_args(argv[1:])
            except SystemExit as exc:  # argparse: an unknown or renamed option
                raise AssertionError(f"line {line} ({section}): {cmd!r} does not parse") from exc


# --------------------------------------------------------------------------- the document's commands

@pytest.mark.slow
def test_every_ci_command_prints_the_documented_numbers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name the shipped data relative to the repository root
    monkeypatch.delenv("NNSENS_PIMA_CSV", raising=False)
    problems = []
    for block in parse_doc(DOC.read_text(encoding="utf-8")).runs:
        printed = "".join(run_command(c, tmp_path, capsys) for c in block.commands)
        missing = match_lines(block.expected, printed, block.abs_tol, block.rel_tol)
        if missing and any(not match_lines(alt, printed, block.abs_tol, block.rel_tol)
                           for alt in block.alternatives):
            missing = []  # another host's documented output, matched at the same precision
        if missing:
            problems.append(f"line {block.line} ({block.section}): not printed (±{block.abs_tol} / "
                            f"±{block.rel_tol:.0%}):\n  " + "\n  ".join(missing)
                            + "\nprinted:\n" + printed)
    assert not problems, "\n\n".join(problems)
