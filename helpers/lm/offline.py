"""Where the offline model lives, and the corpus it was trained on.

The course's offline model (``load_model("tiny-offline")``) is a one-layer GPT-2 shipped in
``data/tiny_lm/``; ``scripts/build_tiny_lm.py`` built it. Its corpus is text every Python install
carries: the ``pydoc`` help topics and the standard library's source files. The package reads
that corpus at run time too: its held-out documents are the text notebook 04 harvests
activations on (``helpers.lm.loading.corpus_token_windows``), so this module holds the corpus and
the train / held-out split that the build script and the package share.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

from helpers.paths import data_dir

MODEL_DIR_NAME = "tiny_lm"
HELD_OUT_FRACTION = 0.05


def model_dir() -> Path:
    """``data/tiny_lm``: where the offline model lives."""
    return data_dir() / MODEL_DIR_NAME


SKIP_PARTS = ("site-packages", "__pycache__", "encodings", "pydoc_data")
"""Folders left out: installed packages, bytecode, the codec tables of ``encodings`` (mostly
character maps) and ``pydoc_data`` (its help topics are added as prose instead)."""
MAX_FILE_BYTES = 300_000
"""Larger files are generated tables, not code anyone wrote."""


def _stdlib_sources(max_chars: int) -> list[str]:
    """The standard library's Python source files (code, comments and docstrings, tests
    included), in a fixed order, up to ``max_chars`` characters in all."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if any(part in SKIP_PARTS for part in path.relative_to(root).parts) or path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, ValueError, OSError):
            continue
        if text.strip():
            out.append(text)
            total += len(text)
        if total >= max_chars:
            break
    return out


def corpus_documents(max_source_chars: int = 40_000_000) -> list[str]:
    """The corpus as a list of documents: the ``pydoc`` help topics (Python's documentation as
    prose), then every standard-library source file (about 29 MB on Python 3.11)."""
    import pydoc_data.topics as topics

    docs = [topics.topics[k].strip() for k in sorted(topics.topics)]
    return docs + _stdlib_sources(max_source_chars)


def split_documents(docs: list[str]) -> tuple[list[str], list[str]]:
    """A fixed train / held-out split: every 20th document is held out."""
    every = round(1 / HELD_OUT_FRACTION)
    return [d for i, d in enumerate(docs) if i % every], [d for i, d in enumerate(docs) if i % every == 0]
