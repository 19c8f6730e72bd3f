"""Exercises: one source for solutions and stubs, and the check that follows each exercise.

The committed notebooks hold the solutions, each between two marker lines::

    def toy_forward(W, b, x):
        ### BEGIN SOLUTION
        return torch.relu(...)
        ### END SOLUTION

``python -m helpers.course.exercises`` writes the exercise versions to ``notebooks/exercises/``:
every solution block becomes ``raise NotImplementedError(...)`` at the same indentation,
outputs are cleared, and nbval's output checks are dropped (an exercise notebook has no
stored outputs to compare with). A test regenerates them and fails if the committed ones are
out of date. The markers are nbgrader's, so nbgrader's ``ClearSolutions`` would do the same.

After each exercise comes a check cell, e.g. ``toy_forward = checks.forward(toy_forward)``:
``check`` runs the reader's function against the reference on small cases and returns the
function the rest of the notebook should use:

* the reader's own, when it passes (``✔``);
* the reference, when the exercise is still a stub: it prints the hint and says so, so the
  exercise notebook runs top to bottom before anything is written;
* nothing, when it is wrong: it raises ``ExerciseError`` with the most likely mistake.
"""
from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Callable, TypeVar

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("exercise: write this part (the hint is above), or run on: the check uses the reference")'
EXERCISE_DIR = "exercises"

F = TypeVar("F", bound=Callable)


class ExerciseError(AssertionError):
    """The reader's solution gives a wrong answer; the message says what is most likely wrong."""


def expect(condition: bool, message: str) -> None:
    """Inside a check: fail with ``message`` (what the reader most likely got wrong) unless ``condition``."""
    if not bool(condition):
        raise ExerciseError(message)


def check(name: str, learner: F, reference: F, test: Callable[[Callable], None], hint: str, how: str = "") -> F:
    """Run ``test(learner)``; return the function the notebook should go on with (see module doc).

    ``hint`` says the idea (what to compute and why), ``how`` the steps; neither is code. An
    unwritten exercise prints the idea and shows the steps folded away (in a notebook).
    """
    try:
        test(learner)
    except NotImplementedError:
        print(f"… {name}: not written yet. The idea: {hint}\n  From here on the notebook uses the reference solution.")
        if how:
            _show_folded(f"A second hint for {name}: how", how)
        return reference
    except ExerciseError as err:
        raise ExerciseError(f"✘ {name}: {err}") from None
    print(f"✔ {name}: your solution passes the check")
    return learner


def _show_folded(summary: str, text: str) -> None:
    """``text`` under a collapsed heading in a notebook; printed after ``summary`` elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None and "IPKernelApp" in get_ipython().config:
        display(HTML(f"<details><summary>{html.escape(summary)} (click to open)</summary>{html.escape(text)}</details>"))
    else:
        print(f"  {summary}: {text}")


# --------------------------------------------------------------------------------------
# Generating the exercise notebooks
# --------------------------------------------------------------------------------------
def strip_solutions(source: str) -> str:
    """``source`` with each solution block replaced by a stub at the block's indentation."""
    out, inside = [], False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside:
                raise ValueError(f"nested {BEGIN!r} in:\n{source}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
        elif stripped.startswith(END):
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "".join(out)


def exercise_notebook(nb: dict) -> dict:
    """The exercise version of a solution notebook (a new dict; ``nb`` is not changed)."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        src = strip_solutions(src)
        src = re.sub(r"^# NBVAL_CHECK_OUTPUT\n", "", src)  # nothing stored to compare with
        cell["source"] = src.splitlines(keepends=True)
        cell["outputs"], cell["execution_count"] = [], None
    return nb


def has_exercises(nb: dict) -> bool:
    return any(BEGIN in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def render(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def write_exercise_notebooks(notebooks: Path | None = None) -> list[Path]:
    """Regenerate ``notebooks/exercises/<name>.ipynb`` for every solution notebook with exercises."""
    notebooks = Path(notebooks) if notebooks else Path(__file__).resolve().parents[2] / "notebooks"
    written = []
    for src in sorted(notebooks.glob("[0-9]*.ipynb")):
        nb = json.loads(src.read_text())
        if not has_exercises(nb):
            continue
        dst = notebooks / EXERCISE_DIR / src.name
        dst.parent.mkdir(exist_ok=True)
        dst.write_text(render(exercise_notebook(nb)))
        written.append(dst)
    return written


if __name__ == "__main__":  # python -m helpers.course.exercises
    for path in write_exercise_notebooks(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print("wrote", path)
