"""Exercise notebooks are generated from the solution notebooks and stay in sync; the check
helper passes a right answer, falls back to the reference for a stub, and names a wrong one."""
import json
from pathlib import Path

import pytest

from helpers import exercises as ex

ROOT = Path(__file__).resolve().parents[1]

SOLVED = '''def double(x):
    """Twice x."""
    # Hint: multiply.
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION
'''


def test_solution_blocks_become_indented_stubs():
    out = ex.strip_solutions(SOLVED)
    assert "return 2 * x" not in out, "the solution must not leak into the exercise version"
    assert f"    {ex.STUB}\n" in out, "the stub must sit at the solution's indentation"
    assert "# Hint: multiply." in out, "text outside the markers (the hint) must stay"
    namespace = {}
    exec(out, namespace)
    with pytest.raises(NotImplementedError):
        namespace["double"](1)


@pytest.mark.parametrize("bad", [f"{ex.BEGIN}\nx = 1\n", f"x = 1\n{ex.END}\n", f"{ex.BEGIN}\n{ex.BEGIN}\n{ex.END}\n"])
def test_unbalanced_markers_are_errors(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        ex.strip_solutions(bad)


def _test_double(fn):
    ex.expect(fn(3) == 6, "double(3) should be 6: did you add instead of multiply?")


def test_check_returns_learner_reference_or_raises(capsys):
    ref = lambda x: 2 * x  # noqa: E731
    good = lambda x: x * 2  # noqa: E731
    assert ex.check("double", good, ref, _test_double, hint="multiply") is good
    assert "✔" in capsys.readouterr().out

    def stub(x):
        raise NotImplementedError("exercise")
    assert ex.check("double", stub, ref, _test_double, hint="multiply by two") is ref
    out = capsys.readouterr().out
    assert "multiply by two" in out and "reference" in out, "an unfinished exercise must print its hint"

    with pytest.raises(ex.ExerciseError, match="add instead of multiply"):
        ex.check("double", lambda x: x + 2, ref, _test_double, hint="multiply")


def test_committed_exercise_notebooks_are_up_to_date():
    nb_dir = ROOT / "notebooks"
    for src in sorted(nb_dir.glob("[0-9]*.ipynb")):
        nb = json.loads(src.read_text())
        dst = nb_dir / ex.EXERCISE_DIR / src.name
        if not ex.has_exercises(nb):
            assert not dst.exists(), f"{dst} exists but {src.name} has no exercises: delete it"
            continue
        assert dst.exists(), f"{src.name} has exercises but no {dst}: run `python -m helpers.exercises`"
        assert dst.read_text() == ex.render(ex.exercise_notebook(nb)), (
            f"{dst.relative_to(ROOT)} is out of date with {src.name}: run `python -m helpers.exercises`")
        assert ex.BEGIN not in dst.read_text() and "NBVAL_CHECK_OUTPUT" not in dst.read_text()
