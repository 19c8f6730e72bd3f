"""Claims: one readable ✔/✘ line per checked sentence, recorded for the runtime report, and a
false claim fails the notebook test."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook, new_output
from nbval.plugin import get_sanitize_patterns

from helpers.course import claims
from helpers.course.claims import claim, claims_summary, fmt

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "tests" / "sanitize.cfg"


@pytest.fixture(autouse=True)
def fresh_record(monkeypatch):
    """Each test starts with no recorded claims, at the ci scale, writing no claims file, and not
    strict: these tests read the printed ✘ lines (strict mode has a test of its own)."""
    monkeypatch.delenv("COURSE_CLAIMS_STRICT", raising=False)
    monkeypatch.setattr(claims, "CLAIMS", [])
    monkeypatch.setenv("TUTORIAL_SCALE", "ci")
    monkeypatch.delenv("COURSE_CLAIMS_FILE", raising=False)
    monkeypatch.delenv("COURSE_NOTEBOOK", raising=False)


def printed(capsys, *args, **kwargs):
    """The return value of claim(...) and the one line it printed."""
    held = claim(*args, **kwargs)
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"a claim must print exactly one line, got {out!r}"
    return held, out.rstrip("\n")


@pytest.mark.parametrize("x, shown", [
    (0.99312, "0.993"), (70.94, "70.9"), (2.0, "2"), (-0.5, "-0.5"), (12345.6, "12300"),
    (0.00123456, "0.00123"), (1.234e-5, "1.23e-05"), (3e7, "3.00e+07"), (0, "0"), (float("nan"), "nan"),
])
def test_numbers_print_with_three_significant_digits(x, shown):
    assert fmt(x) == shown, f"fmt({x!r}) should print {shown!r}, got {fmt(x)!r}"


def test_each_kind_of_value_prints_compactly(capsys):
    gaps = np.array([70.94, 71.2, 73.41, 72.0])
    assert printed(capsys, "a pentagon", gaps, within=(62, 82), unit="°", label="neighbour gaps") == (
        True, "✔ a pentagon (neighbour gaps 70.9-73.4°)")
    assert printed(capsys, "kept the top two", {0, 1} == {0, 1}) == (True, "✔ kept the top two")
    assert printed(capsys, "MMCS reaches 0.99", torch.tensor(0.99312), at_least=0.99) == (
        True, "✔ MMCS reaches 0.99 (measured 0.993)")
    assert printed(capsys, "small", [0.01, 0.02, 0.015], at_most=0.05) == (True, "✔ small (measured 0.01-0.02)")
    assert printed(capsys, "a count", 7, within=(5, 9)) == (True, "✔ a count (measured 7)")
    assert printed(capsys, "signed", torch.tensor([-0.5, 0.25], dtype=torch.bfloat16), within=(-1, 1)) == (
        True, "✔ signed (measured -0.5 to 0.25)")
    assert printed(capsys, "all alive", torch.tensor([True, True]))[1] == "✔ all alive"
    assert printed(capsys, "numpy bool", np.bool_(True))[1] == "✔ numpy bool"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_tensor_on_the_gpu_is_measured_like_one_on_the_cpu(capsys):
    assert printed(capsys, "on the GPU", torch.tensor([0.5, 0.7], device="cuda"), at_least=0.4) == (
        True, "✔ on the GPU (measured 0.5-0.7)")


def test_a_failed_claim_says_what_was_measured_and_expected(capsys):
    held, line = printed(capsys, "MMCS reaches 0.99", 0.93112, at_least=0.99)
    assert (held, line) == (False, "✘ MMCS reaches 0.99 (measured 0.931; expected ≥ 0.99)")
    held, line = printed(capsys, "a pentagon", [55.0, 70.0, 72.0], within=(62, 82), unit="°")
    assert (held, line) == (False, "✘ a pentagon (measured 55-72°, 1 of 3 outside; expected 62-82°)")
    held, line = printed(capsys, "kept the top two", {0, 2} == {0, 1})
    assert (held, line) == (False, "✘ kept the top two (measured false; expected true)")
    held, line = printed(capsys, "all alive", np.array([True, False, True]))
    assert (held, line) == (False, "✘ all alive (measured 2 of 3 true; expected true)")
    assert printed(capsys, "at most", 0.3, at_most=0.2)[1] == "✘ at most (measured 0.3; expected ≤ 0.2)"
    verdicts = [claim("yes", True), claim("no", False)]
    assert [bool(v) for v in verdicts] == [True, False] and [repr(v) for v in verdicts] == ["True", "False"], (
        "the verdict must behave and print like the bool it stands for")
    capsys.readouterr()
    assert not printed(capsys, "empty", [], at_least=0)[0], "an empty measurement must not pass"


def test_nan_never_passes(capsys):
    assert printed(capsys, "a", float("nan"), at_most=1.0) == (False, "✘ a (measured nan; expected ≤ 1)")
    held, line = printed(capsys, "b", np.array([0.5, np.nan]), within=(0, 1))
    assert (held, line) == (False, "✘ b (measured 0.5, 1 of 2 nan; expected 0-1)")
    assert not printed(capsys, "c", torch.full((3,), float("nan")), at_least=0.0)[0]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(value=0.5), ValueError, "needs a bound"),
    (dict(value=0.5, within=(2, 1)), ValueError, "lower bound 2.0 is above"),
    (dict(value=0.5, at_least=2, at_most=1), ValueError, "lower bound"),
    (dict(value=0.5, within=(1, 2, 3)), ValueError, "two numbers"),
    (dict(value=0.5, within=(0, 1), at_least=0), ValueError, "either within"),
    (dict(value=0.5, at_most=float("nan")), ValueError, "finite"),
    (dict(value=True, at_least=1), ValueError, "claim by itself"),
    (dict(value="high", at_least=1), TypeError, "bool or numbers"),
    (dict(value=0.5, at_least=0, scales=("huge",)), ValueError, "ci, laptop, full"),
])
def test_bad_arguments_are_clear_errors(capsys, kwargs, error, match):
    with pytest.raises(error, match=match):
        claim("bad", **kwargs)
    assert capsys.readouterr().out == "", "a claim with bad arguments must print nothing"
    assert claims.CLAIMS == [], "a claim with bad arguments must record nothing"


def test_a_claim_for_other_scales_is_skipped_visibly(capsys, monkeypatch):
    held, line = printed(capsys, "the grid finds the zone", 0.2, at_least=0.9, scales=("laptop", "full"))
    assert held is None, "a skipped claim returns None (not checked), not a verdict"
    assert line == "– skipped at ci: the grid finds the zone (checked at laptop, full)"
    assert claims.CLAIMS[-1].held is None and claims.CLAIMS[-1].measured == "0.2"
    monkeypatch.setenv("TUTORIAL_SCALE", "laptop")
    held, line = printed(capsys, "the grid finds the zone", 0.2, at_least=0.9, scales=("laptop", "full"))
    assert (held, line[0]) == (False, "✘"), "at a listed scale the claim must be checked"


def test_a_value_passed_as_a_function_is_computed_only_where_the_claim_is_checked(capsys, monkeypatch):
    """A laptop-only claim about an entry the ci run does not have must not crash at ci."""
    picks = {100: 3}  # the ci run has no window 2000

    held, line = printed(capsys, "a long window picks the largest size", lambda: picks[2000] == 4, scales=("laptop",))
    assert held is None and line.startswith("– skipped at ci"), line
    held, line = printed(capsys, "the value is large", lambda: picks[2000], at_least=1, scales=("laptop",))
    assert held is None and line.startswith("– skipped at ci"), line
    assert claims.CLAIMS[-1].measured == "not computed", "a skipped claim's value was never computed: say so"
    monkeypatch.setenv("TUTORIAL_SCALE", "laptop")
    picks[2000] = 4
    held, line = printed(capsys, "a long window picks the largest size", lambda: picks[2000] == 4, scales=("laptop",))
    assert held and line[0] == "✔", "at a listed scale the function must be called and its value checked"
    held, line = printed(capsys, "the value is large", lambda: picks[2000], at_least=5, scales=("laptop",))
    assert held is not None and not held and "measured 4" in line, line


def test_claims_are_recorded_and_appended_as_json_lines(capsys, monkeypatch, tmp_path):
    path = tmp_path / "claims.jsonl"
    monkeypatch.setenv("COURSE_CLAIMS_FILE", str(path))
    monkeypatch.setenv("COURSE_NOTEBOOK", "01_toy_superposition.ipynb")
    claim("holds", 0.995, at_least=0.99)
    claim("fails", [1.0, 3.0], within=(0, 2), unit=" dims")
    claim("skipped", True, scales=["full"])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {"notebook": "01_toy_superposition.ipynb", "claim": "holds", "scale": "ci", "measured": "0.995",
         "expected": "≥ 0.99", "held": True},
        {"notebook": "01_toy_superposition.ipynb", "claim": "fails", "scale": "ci", "measured": "1-3 dims",
         "expected": "0-2 dims", "held": False},
        {"notebook": "01_toy_superposition.ipynb", "claim": "skipped", "scale": "ci", "measured": "true",
         "expected": "true", "held": None},
    ], "each claim must append one JSON line to $COURSE_CLAIMS_FILE"
    assert [c._asdict() for c in claims.CLAIMS] == rows, "CLAIMS and the file must record the same claims"
    capsys.readouterr()
    claims_summary()
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "3 claims: 1 held, 1 failed, 1 skipped"
    assert table[2].startswith("  ✘") and table[2].endswith("fails  (expected 0-2 dims)"), table


# --- nbval: the stored ✔ line against what the notebook computes ---------------------------

def sanitize(text: str) -> str:
    """What nbval compares: ``text`` after every rule of tests/sanitize.cfg, in order."""
    for regex, replace in get_sanitize_patterns(SANITIZE.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def test_sanitizer_keeps_the_mark_and_ignores_the_last_digits(capsys):
    lines = {}
    for key, value in [("a", 70.949), ("b", 70.951), ("low", 55.0)]:
        claim("the gaps are regular", [value, 72.0], within=(62, 82), unit="°")
        lines[key] = capsys.readouterr().out
    assert lines["a"] != lines["b"], "the test needs two values printed differently (70.9 vs 71)"
    assert sanitize(lines["a"]) == sanitize(lines["b"]) == "✔ the gaps are regular\n", (
        "tests/sanitize.cfg must reduce a claim line to its mark and sentence, so that the last "
        f"digits of a measured value cannot fail a notebook: {sanitize(lines['a'])!r}, {sanitize(lines['b'])!r}")
    assert sanitize(lines["low"]) == "✘ the gaps are regular\n", "the ✘ mark must survive the sanitizer"
    mixed = "loss 0.123456\n✔ MMCS reaches 0.99 (measured 0.993)\n– skipped at ci: slow (checked at full)\n"
    assert sanitize(mixed) == "loss 0.12\n✔ MMCS reaches 0.99\n– skipped at ci: slow (checked at full)\n", (
        "other lines keep their two-decimal rounding, and a skip line stays whole")


def test_strict_mode_raises_on_a_false_claim_and_not_on_a_true_one(capsys, monkeypatch):
    from helpers.course.claims import ClaimFailed

    monkeypatch.setenv("COURSE_CLAIMS_STRICT", "1")
    assert claim("about four", 4.0, within=(3.9, 4.1))
    assert claim("skipped here", 5.0, within=(3.9, 4.1), scales=("full",)) is None
    with pytest.raises(ClaimFailed, match="✘ about four"):
        claim("about four", 5.0, within=(3.9, 4.1))
    assert "✘ about four" in capsys.readouterr().out, "the ✘ line is printed before the claim raises"


def _claim_notebook(path: Path, value: float) -> None:
    """A one-cell notebook whose stored output is a ✔ line of another run (other digits, no output check)."""
    cell = new_code_cell(
        "from helpers.course.claims import claim\n"
        f"claim('the value is about four', {value!r}, within=(3.9, 4.1))",  # no ';': the verdict shows nothing
        execution_count=1,
        outputs=[new_output("stream", name="stdout", text="✔ the value is about four (measured 4.01)\n")],
    )
    nbformat.write(new_notebook(cells=[cell]), path)


def test_a_false_claim_fails_the_notebook_under_nbval(tmp_path):
    """The stored outputs can come from any scale: under the tests a false claim raises by itself."""
    _claim_notebook(tmp_path / "true_claim.ipynb", 4.0)
    _claim_notebook(tmp_path / "false_claim.ipynb", 5.0)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
         str(SANITIZE), "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path), "-rA",
         "true_claim.ipynb", "false_claim.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COURSE_CLAIMS_STRICT": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    outcome = {name: status for status, name in
               re.findall(r"^(PASSED|FAILED) (\w+)\.ipynb::Cell 0", run.stdout, re.M)}
    assert outcome == {"true_claim": "PASSED", "false_claim": "FAILED"}, (
        "a true claim (stored ✔ 4.01, computed ✔ 4) must pass and a false one (computed ✘) must fail "
        f"under nbval; pytest said:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")


# --- benchmarks/course_runtime.py ------------------------------------------------------------

def test_course_runtime_reports_time_memory_claims_and_errors(tmp_path):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nbformat.write(new_notebook(cells=[
        new_code_cell("from helpers.course.claims import claim\nimport time; time.sleep(0.2)"),
        new_code_cell("claim('one plus one is two', 1 + 1, within=(2, 2))"),
    ]), nb_dir / "01_tiny.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("raise KeyError('on purpose')"), new_code_cell("1")]),
                   nb_dir / "02_broken.ipynb")
    committed = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "course_runtime.py"), "--scale", "ci", "--notebooks-dir",
         str(nb_dir), "--timeout", "120", "--claims-json", str(tmp_path / "claims.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, f"course_runtime.py failed:\n{run.stderr[-3000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["scale"] == "ci" and result["total_seconds"] > 0
    tiny, broken = result["notebooks"]
    assert tiny["name"] == "01_tiny" and tiny["error"] is None, tiny
    assert tiny["wall_seconds"] >= 0.2 and 10 < tiny["peak_rss_mb"] < 10_000, tiny
    assert [c["index"] for c in tiny["slowest_cells"]] == [0, 1], "the sleeping cell must be the slowest"
    assert tiny["slowest_cells"][0]["first_line"] == "from helpers.course.claims import claim"
    assert (tiny["claims_held"], tiny["claims_failed"], tiny["claims_skipped"]) == (1, [], 0), tiny
    assert broken["error"] == {"index": 0, "name": "KeyError", "message": "'on purpose'"}, (
        f"a failing cell must be recorded and the run go on: {broken}")
    table = json.loads((tmp_path / "claims.json").read_text())
    assert table == [{"notebook": "01_tiny", "claim": "one plus one is two", "scale": "ci", "measured": "2",
                      "expected": "2", "held": True}], table
    assert {p.name: p.read_bytes() for p in nb_dir.iterdir()} == committed, "the notebooks must stay as they were"


def test_claims_robustness_lines_claims_up_across_seeds_and_flags_near_misses():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from claims_robustness import line_up, margin
    finally:
        sys.path.pop(0)

    def c(text, measured, expected, held):
        return {"notebook": "nb", "claim": text, "measured": measured, "expected": expected, "held": held}

    runs = [{"seed": 0, "claims": [c("a", "0.99", "≥ 0.9", True), c("b", "true", "true", True), c("a", "3", "≤ 5", True),
                                   c("skip", "not computed", "true", None)]},
            {"seed": 1, "claims": [c("a", "0.91", "≥ 0.9", True), c("b", "false", "true", False)]}]
    table = line_up(runs)
    assert [(r["claim"], r["held_in"], r["of"], r["missing_in"]) for r in table] == [
        ("a", 2, 2, []), ("b", 1, 2, []), ("a", 1, 2, [1])], table  # the second "a" never ran in seed 1
    assert table[0]["closest_margin"] == pytest.approx(0.011, abs=1e-3) and table[1]["closest_margin"] is None
    assert margin("70.9-73.4°", "62-82°") == pytest.approx(min(8.9 / 62, 8.6 / 82))
    assert margin("-0.5 to 0.2", "-1 to 1") == pytest.approx(0.5)
    assert margin("0.971", "≤ 0.2") < 0, "a value past its bound has a negative margin"
