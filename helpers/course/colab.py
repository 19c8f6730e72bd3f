"""The one place that knows where the course lives online, and the setup cell built from it.

Every notebook starts with ``SETUP_CELL`` verbatim (a test checks this). On Colab the cell
clones the course and installs it (Colab's own torch is kept, since ``torch>=2.2`` is
already satisfied); anywhere else it does nothing, because the reader installed the course
with ``pip install -r requirements.txt``.
"""
import argparse
import json
from pathlib import Path

REPO_URL = "https://github.com/sae-course/superposition-and-saes"
"""The course repository. Change it here, then run ``python -m helpers.course.colab --sync-notebooks``
to refresh the notebooks' setup cells; the README's Colab badges are edited by hand."""

BRANCH = "main"

SETUP_CELL = f'''# Setup (the same in every notebook): on Colab, fetch and install the course; elsewhere do nothing.
import os, shutil, subprocess, sys
if "google.colab" in sys.modules:
    course = "/content/course"
    if not os.path.exists(f"{{course}}/.clone-complete"):  # first run, or a clone that was cut off
        shutil.rmtree(course, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--depth", "1", "{REPO_URL}", course], check=True)
        open(f"{{course}}/.clone-complete", "w").close()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)
    os.chdir(f"{{course}}/notebooks")'''
"""The first code cell of every notebook. A clone interrupted half-way (a closed tab, a
dropped connection) leaves a folder without the marker file, so the next run starts the
clone afresh instead of failing at install on every rerun."""


def colab_url(notebook: str) -> str:
    """The 'Open in Colab' address of ``notebooks/<notebook>``."""
    slug = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/notebooks/{notebook}"


def sync_notebooks(notebooks_dir: str | Path | None = None) -> list[str]:
    """Make the first code cell of every notebook ``SETUP_CELL``; other cells stay as they are.

    Returns the names of the notebooks that changed.
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else Path(__file__).resolve().parents[2] / "notebooks"
    changed = []
    for nb_path in sorted(folder.glob("[0-9]*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        first = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
        if first is None or "".join(first["source"]) == SETUP_CELL:
            continue
        first["source"] = SETUP_CELL.splitlines(keepends=True)
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        changed.append(nb_path.name)
    return changed


if __name__ == "__main__":  # pragma: no cover - maintenance command
    parser = argparse.ArgumentParser(description="Maintenance of the course's Colab setup.")
    parser.add_argument("--sync-notebooks", action="store_true",
                        help="rewrite the first code cell of every notebook to SETUP_CELL")
    if parser.parse_args().sync_notebooks:
        names = sync_notebooks()
        print("updated: " + (", ".join(names) if names else "nothing, every notebook already starts with SETUP_CELL"))
    else:
        parser.print_help()
