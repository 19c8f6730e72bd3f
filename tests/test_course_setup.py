"""The course's plumbing: environments agree, notebooks share one setup cell, scales and
devices fail clearly."""
import json
import re
import os
import subprocess
import sys
import types
from operator import attrgetter
from pathlib import Path

import pytest
import torch

from helpers.course import colab
from helpers.course.sizes import SCALES, current_scale, sizes
from helpers.device import get_device, seed_everything

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _requirement_names(lines):
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        names.add(line if line.startswith("-e") else line.replace(" ", ""))
    return names


def test_requirements_and_environment_list_the_same_packages():
    req = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(env_lines) if l.strip() == "- pip:")
    pip_section = [l.strip()[2:] for l in env_lines[start + 1:] if l.strip().startswith("- ")]
    env = _requirement_names(pip_section)
    assert req == env, (
        "requirements.txt and environment.yml disagree: only in requirements.txt: "
        f"{sorted(req - env)}, only in environment.yml: {sorted(env - req)}"
    )
    assert "torch>=2.2" in req, "requirements.txt must accept the preinstalled torch (torch>=2.2)"
    assert "transformer-lens>=3.9,<5" in req, "TransformerLens must allow 3.9 (SAELens) and 4.x"


COURSE = [
    "01_toy_superposition.ipynb",
    "02_sae_ground_truth.ipynb",
    "03_hyperparameter_diagnostics.ipynb",
    "04_lm_mlp_features.ipynb",
    "05_beyond_the_report.ipynb",
    "06_choosing_l0_and_width.ipynb",
]


def test_notebooks_are_the_course_chapters_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names, "notebooks/ holds no numbered notebook"
    assert names == COURSE[: len(names)], (
        f"notebooks/ should hold the course's chapters in order without gaps, {COURSE}; got {names}"
    )


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_the_shared_setup_cell(nb_path):
    nb = json.loads(nb_path.read_text())
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "".join(first_code["source"]) == colab.SETUP_CELL, (
        f"{nb_path.name}: the first code cell differs from helpers.course.colab.SETUP_CELL; "
        "run `python -m helpers.course.colab --sync-notebooks` to refresh it"
    )
    sources = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "sys.path" not in sources.replace(colab.SETUP_CELL, ""), f"{nb_path.name} edits sys.path"


class FakeColab:
    """Runs SETUP_CELL as if on Colab, with the course folder in ``tmp`` and git and pip faked.

    The fake git behaves like the real one where it matters: it refuses a destination that
    exists and is not empty, and when ``cut_off`` it leaves a partial folder and fails.
    """

    def __init__(self, tmp: Path, monkeypatch):
        self.course, self.commands, self.cwd, self.cut_off = tmp / "course", [], None, False
        self.code = colab.SETUP_CELL.replace('"/content/course"', repr(str(self.course)))
        assert self.code.count(repr(str(self.course))) == 1, (
            'SETUP_CELL must name "/content/course" exactly once (course = "/content/course")')
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        monkeypatch.setattr(subprocess, "run", self.run)
        monkeypatch.setattr(subprocess, "check_call", self.run)
        monkeypatch.setattr(os, "chdir", lambda path: setattr(self, "cwd", Path(path)))

    def run(self, cmd, *args, **kwargs):
        self.commands.append(cmd[0] if cmd[0] == "git" else "pip" if "pip" in cmd else cmd[0])
        if cmd[0] == "git":
            dest = Path(cmd[-1])
            if dest.exists() and any(dest.iterdir()):
                raise subprocess.CalledProcessError(128, cmd, "destination path already exists")
            (dest / ".git").mkdir(parents=True)
            if self.cut_off:
                raise subprocess.CalledProcessError(-9, cmd)
            (dest / "helpers").mkdir()
            (dest / "notebooks").mkdir()
            (dest / "helpers" / "__init__.py").write_text("")
            (dest / "pyproject.toml").write_text("[project]")
        return subprocess.CompletedProcess(cmd, 0)

    def setup(self):
        exec(compile(self.code, "setup cell", "exec"), {})


def test_setup_cell_clones_once_and_installs(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch)
    fake.setup()
    assert fake.commands == ["git", "pip"], f"a fresh Colab must clone, then install: {fake.commands}"
    assert fake.cwd == fake.course / "notebooks", "the setup cell must move into the course's notebooks"
    fake.commands.clear()
    fake.setup()
    assert fake.commands == ["pip"], f"a complete earlier clone must be kept, not cloned again: {fake.commands}"


def test_setup_cell_clones_again_after_an_interrupted_clone(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch)
    fake.cut_off = True
    with pytest.raises(subprocess.CalledProcessError):
        fake.setup()
    fake.cut_off, fake.commands = False, []
    fake.setup()
    assert fake.commands == ["git", "pip"], (
        f"after a clone that was cut off, the rerun must clone afresh before installing: {fake.commands}")
    assert (fake.course / "pyproject.toml").exists(), "the rerun must clone the course into its folder"


def test_setup_cell_replaces_a_folder_without_the_course(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch)
    (fake.course / "helpers").mkdir(parents=True)
    (fake.course / "stale.txt").write_text("from an older, broken clone")
    fake.setup()
    assert fake.commands == ["git", "pip"], f"a folder without the mark of a complete clone must be cloned again: {fake.commands}"
    assert not (fake.course / "stale.txt").exists(), "the broken folder must be removed before the new clone"


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    calls = []
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(path))
    exec(compile(colab.SETUP_CELL, "setup cell", "exec"), {})
    assert calls == [], f"outside Colab the setup cell must run nothing: {calls}"


def test_sync_notebooks_rewrites_only_the_first_code_cell(tmp_path):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
             {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [], "source": ["import os  # old"]},
             {"cell_type": "code", "execution_count": 2, "metadata": {"tags": ["x"]}, "outputs": [],
              "source": ["print(1)"]}]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "01_demo.ipynb").write_text(json.dumps(nb, indent=1))
    assert colab.sync_notebooks(tmp_path) == ["01_demo.ipynb"]
    synced = json.loads((tmp_path / "01_demo.ipynb").read_text())
    assert "".join(synced["cells"][1]["source"]) == colab.SETUP_CELL
    assert synced["cells"][1]["execution_count"] == 1, "the setup cell keeps its execution count"
    assert [synced["cells"][0], synced["cells"][2]] == [cells[0], cells[2]], "other cells must not change"
    assert synced["metadata"] == nb["metadata"]
    assert colab.sync_notebooks(tmp_path) == [], "a second sync must find nothing to change"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_small_and_executed(nb_path):
    assert nb_path.stat().st_size < 2_000_000, f"{nb_path.name} is over 2 MB: trim stored outputs"
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), (
        f"{nb_path.name} has unexecuted cells: commit it with the outputs of a ci-scale run"
    )


def test_readme_links_each_notebook_to_colab():
    readme = (ROOT / "README.md").read_text()
    for nb_path in NOTEBOOKS:
        assert colab.colab_url(nb_path.name) in readme, f"README lacks the Colab badge of {nb_path.name}"


def test_unknown_scale_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TUTORIAL_SCALE", "huge")
    with pytest.raises(ValueError, match="TUTORIAL_SCALE"):
        current_scale()
    with pytest.raises(ValueError, match="Unknown scale"):
        sizes("huge")


# The problem each notebook poses grows from ci to full (training budgets and learning rates do
# not: ci trains its small grid longer at a lower rate than laptop's warmup-cosine recipe).
_PROBLEM_SIZES = ("toy.densities", "toy.phase_grid", "toy.dim_features", "toy.dim_hidden", "toy.dim_densities",
                  "toy.abs_features", "toy.abs_hidden", "toy.softmax_features", "sae.gt_features", "sae.gt_dim",
                  "lm.tokens", "beyond.suspect_features")
_GRID_AXES = ("sae.dict_ratios", "lm.expansions", "lm.l1_values", "beyond.sizes", "beyond.suspect_sizes")


def test_every_scale_poses_a_larger_problem_than_the_one_before():
    for scale in SCALES:
        assert sizes(scale).scale == scale
    ci, laptop, full = (sizes(s) for s in ("ci", "laptop", "full"))
    for name in _PROBLEM_SIZES:
        a, b, c = (attrgetter(name)(s) for s in (ci, laptop, full))
        assert a <= b <= c, f"{name}: ci {a}, laptop {b}, full {c}; a larger scale must not pose a smaller problem"
    for name in _GRID_AXES:
        big, small = attrgetter(name)(full), attrgetter(name)(laptop)
        assert len(big) >= len(small), f"{name}: full's grid axis {big} is shorter than laptop's {small}"
    assert (laptop.sae.gt_features, laptop.sae.gt_dim) == (512, 256), "laptop is the report's G = 512 in h = 256"


def test_device_choice(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert get_device("cpu") == torch.device("cpu")
    expected = ("cuda" if torch.cuda.is_available() else
                "mps" if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else "cpu")
    assert get_device() == torch.device(expected), f"with no COURSE_DEVICE the course must pick {expected}"
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu"), "COURSE_DEVICE=cpu must win over the automatic choice"
    with pytest.raises(ValueError, match="Unknown device"):
        get_device("tpu-9000")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            get_device("cuda")
    # The same choices on a machine with a GPU, whatever this one has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cpu"), "COURSE_DEVICE=cpu must win over a GPU"
    monkeypatch.delenv("COURSE_DEVICE")
    assert get_device() == torch.device("cuda"), "with a GPU and no COURSE_DEVICE the course must pick cuda"


def test_seeding_repeats():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4)), "seed_everything must make torch.rand repeatable"


def test_atomic_write_leaves_no_partial_file(tmp_path):
    from helpers.paths import atomic_write

    target = tmp_path / "table.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir()), "an interrupted write left files behind"
    with atomic_write(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def _claim_line_share(nb: dict) -> tuple[int, int]:
    """(non-empty code lines of the cells that state claims, non-empty code lines of the notebook).

    A claim gets a short cell of its own, after the cell that computes its values: a learner reads
    the computation without regression checks in the way."""
    code = claims = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        n = sum(1 for line in "".join(cell["source"]).splitlines() if line.strip())
        code += n
        if re.search(r"^\s*claim\(", "".join(cell["source"]), re.M):
            claims += n
    return claims, code


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_claims_stay_a_small_part_of_the_code_and_hold_at_every_scale(nb_path):
    nb = json.loads(nb_path.read_text())
    claims, code = _claim_line_share(nb)
    assert claims <= 0.15 * code, (
        f"{nb_path.name}: cells with claims hold {claims} of {code} code lines ({claims / code:.0%}); keep them at "
        "most 15% (claims in short cells of their own): a claim states a finding the learner takes away, regression "
        "numbers belong in tests/")
    pinned = [c for c in nb["cells"] if c["cell_type"] == "code" and re.search(r"scales=\(?\s*\"ci\"\s*,?\s*\)", "".join(c["source"]))]
    assert not pinned, f"{nb_path.name} has claims checked only at ci; a finding holds at every scale"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_a_laptop_run_where_every_claim_held(nb_path):
    """A reader opening a notebook without running it sees what a CPU reader's run gives (the report's
    G = 512 at `laptop`), and every claim line there is ✔. The tests never compare these outputs."""
    nb = json.loads(nb_path.read_text())
    texts = ["".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("scale laptop" in t for t in texts[:6]), f"{nb_path.name}: store the outputs of a TUTORIAL_SCALE=laptop run"
    failed = [line for t in texts for line in t.splitlines() if line.startswith("✘")]
    assert not failed, f"{nb_path.name} is stored with failed claims: {failed[:3]}"
