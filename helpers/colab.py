"""The one place that knows where the course lives online, and the setup cell built from it.

Every notebook starts with ``SETUP_CELL`` verbatim (a test checks this). On Colab the cell
clones the course and installs it (Colab's own torch is kept, since ``torch>=2.2`` is
already satisfied); anywhere else it does nothing, because the reader installed the course
with ``pip install -r requirements.txt``.
"""

REPO_URL = "https://github.com/sae-course/superposition-and-saes"
"""The course repository. Change it here, then run ``python -m helpers.colab`` to refresh
the notebooks' setup cells and README badges."""

BRANCH = "main"

SETUP_CELL = f'''# Setup (the same in every notebook): on Colab, fetch and install the course; elsewhere do nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/course"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", "{REPO_URL}", "/content/course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "/content/course"], check=True)
    os.chdir("/content/course/notebooks")'''


def colab_url(notebook: str) -> str:
    """The 'Open in Colab' address of ``notebooks/<notebook>``."""
    slug = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/notebooks/{notebook}"


def _refresh_notebooks() -> None:  # pragma: no cover - maintenance command
    import json
    from pathlib import Path

    for nb_path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb")):
        nb = json.loads(nb_path.read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        first["source"] = SETUP_CELL.splitlines(keepends=True)
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print("refreshed", nb_path.name)


if __name__ == "__main__":  # pragma: no cover
    _refresh_notebooks()
