"""An online model reads text from its own distribution, through the same code a Colab reader
runs (``datasets``, streamed), tested here on a small local stand-in of the TinyStories split."""
import json

import pytest

from helpers import lm
from helpers.lm import loading

STORIES = ["Once upon a time, there was a little dog named Max. Max liked to run in the park with his ball.",
           "Lily had a red kite. One windy day she took it to the hill, and the kite flew up high.",
           "Tom and Sam found a big box. Inside the box was a small cat. They gave the cat some milk."]


@pytest.fixture(scope="module")
def model():
    return lm.load_model(lm.OFFLINE_MODEL, device="cpu")


@pytest.fixture
def stories(tmp_path):
    folder = tmp_path / "tinystories-standin"
    folder.mkdir()
    with open(folder / "validation.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"text": f"{STORIES[i % 3]} (story {i})"}) + "\n")
    return folder


def test_a_model_listed_in_corpora_reads_its_own_dataset(model, stories, monkeypatch):
    monkeypatch.setitem(loading.CORPORA, lm.OFFLINE_MODEL, str(stories))
    assert lm.corpus_name(model) == str(stories)
    windows = lm.corpus_token_windows(model, 256, seq_len=64)
    text = model.tokenizer.decode(windows[0, 1:].tolist())
    assert "Once upon a time" in text and "little dog" in text, f"the first window is not the dataset's text: {text[:120]!r}"
    assert (windows[:, 0] == windows[0, 0]).all(), "every window starts with the BOS token"


def test_other_models_keep_the_stdlib_corpus(model):
    assert lm.corpus_name(model) == lm.CORPUS
    text = model.tokenizer.decode(lm.corpus_token_windows(model, 256, seq_len=64)[0, 1:].tolist())
    assert "Once upon a time" not in text


def test_a_dataset_too_small_for_the_budget_says_so(model, stories, monkeypatch):
    monkeypatch.setitem(loading.CORPORA, lm.OFFLINE_MODEL, str(stories))
    with pytest.raises(ValueError, match="holds only"):
        lm.corpus_token_windows(model, 100_000, seq_len=64)
    with pytest.raises(ValueError, match="no .story. field"):
        lm.dataset_documents(str(stories), 100, field="story")


def test_a_harvest_on_another_corpus_is_another_cache_entry(model, stories, monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    plain = lm.harvest(model, 256, kinds=("post",), seq_len=64, progress=False)
    monkeypatch.setitem(loading.CORPORA, lm.OFFLINE_MODEL, str(stories))
    own = lm.harvest(model, 256, kinds=("post",), seq_len=64, progress=False)
    assert own.folder != plain.folder and not own.from_cache, "text from another corpus must not reuse the stdlib harvest"
    text = model.tokenizer.decode(own.tokens[0, 1:].tolist())
    assert "Once upon a time" in text, "the harvest must read the model's own corpus"
