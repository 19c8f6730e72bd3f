"""Exercise notebooks are generated from the solution notebooks and stay in sync; the check
helper passes a right answer, falls back to the reference for a stub, and names a wrong one."""
import json
import re
from pathlib import Path

import pytest

from helpers.course import exercises as ex

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
    assert ex.check("double", stub, ref, _test_double, hint="multiply by two", how="shift the bits left once") is ref
    out = capsys.readouterr().out
    assert "multiply by two" in out and "reference" in out, "an unfinished exercise must print its hint"
    assert "A second hint for double: how: shift the bits left once" in out, "outside a notebook the steps are printed"

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
        assert dst.exists(), f"{src.name} has exercises but no {dst}: run `python -m helpers.course.exercises`"
        assert dst.read_text() == ex.render(ex.exercise_notebook(nb)), (
            f"{dst.relative_to(ROOT)} is out of date with {src.name}: run `python -m helpers.course.exercises`")
        assert ex.BEGIN not in dst.read_text() and "NBVAL_CHECK_OUTPUT" not in dst.read_text()


_CODE = re.compile(r"\b(torch|np|F)\.|\.(sum|mean|norm|clone|to|reshape|square)\(|einsum|\[[^\]]*:[^\]]*\]|@|\*\*| = |\bdivmod\b|argsort")


def _hints():
    """(check name, hint, how) of every check(...) call in helpers/course/checks, read from the source."""
    import ast

    found = []
    for path in sorted((ROOT / "helpers" / "course" / "checks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check":
                args = {k.arg: k.value for k in node.keywords}
                hint = node.args[4] if len(node.args) > 4 else args.get("hint")
                how = args.get("how")
                found.append((f"{path.name}:{ast.literal_eval(node.args[0])}", ast.literal_eval(hint),
                              ast.literal_eval(how) if how is not None else ""))
    return found


def test_hints_say_the_idea_and_the_steps_never_the_code():
    hints = _hints()
    assert len(hints) >= 15, f"found only {len(hints)} checks in helpers/course/checks"
    for name, hint, how in hints:
        assert how, f"{name}: give a second hint (how=...) with the steps, in words"
        for label, text in (("hint", hint), ("how", how)):
            code = _CODE.search(text)
            assert code is None, f"{name}: the {label} contains code ({code.group(0)!r}): say it in words: {text!r}"
    assert _CODE.search("np.argsort(-x)[:k]") and _CODE.search("x = relu(W @ h)") and not _CODE.search(
        "the importance-weighted squared error of ReLU(W^T W x + b)"), "the code detector itself is wrong"
