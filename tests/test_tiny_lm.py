"""The offline model's build (scripts/build_tiny_lm.py): the MLP-structure measure (how much is a
token lookup) and the pruning of tokenizer merges, on constructed data where the answer is known;
the shipped checkpoint's recorded numbers against the targets the course states, and its README
against what a rebuild writes."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.lm.loading import offline_model_info
from helpers.lm.offline import model_dir
from helpers.lm.structure import mlp_structure

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_tiny_lm.py"


def _build_module():
    """scripts/build_tiny_lm.py imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_tiny_lm", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lookup_data(rows, vocab, d, noise, seed):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocab, d))
    toks = rng.integers(0, vocab, rows)
    return table[toks] + noise * rng.normal(size=(rows, d)), toks


def test_a_pure_token_lookup_scores_one_and_noise_scores_zero():
    acts, toks = _lookup_data(4000, 20, 16, 0.0, 0)
    fit, held = np.arange(3000), np.arange(3000, 4000)
    lookup = mlp_structure(acts, toks, fit, held, vocab_size=20, chunk=700)
    assert lookup.token_r2 == pytest.approx(1.0, abs=1e-9), "activations that are a function of the token must give R^2 = 1"
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(4000, 16))
    r = mlp_structure(noise, toks, fit, held, vocab_size=20)
    assert abs(r.token_r2) < 0.02, f"token-independent noise must give R^2 near 0 out of sample, got {r.token_r2:.3f}"
    assert r.pcs_99 >= 15, "isotropic noise in 16 dimensions needs nearly all 16 components for 99%"


def test_token_share_is_the_variance_fraction_and_counts_principal_components():
    # Token part has variance 16 * 1; noise part 16 * 1: half explained.
    acts, toks = _lookup_data(60000, 50, 16, 1.0, 2)
    r = mlp_structure(acts, toks, np.arange(50000), np.arange(50000, 60000), vocab_size=50)
    assert 0.43 < r.token_r2 < 0.53, f"equal token and noise variance should explain about half, got {r.token_r2:.3f}"
    flat = np.zeros((1000, 8))
    flat[:, 0] = np.random.default_rng(3).normal(size=1000)
    one = mlp_structure(flat, np.zeros(1000, int), np.arange(500), np.arange(500, 1000), vocab_size=1)
    assert (one.pcs_90, one.pcs_99) == (1, 1), "variance along one axis is one principal component"


def test_structure_arguments_are_checked():
    acts, toks = _lookup_data(100, 5, 4, 0.1, 0)
    fit, held = np.arange(60), np.arange(60, 100)
    with pytest.raises(ValueError, match="tokens"):
        mlp_structure(acts, toks[:50], fit, held, vocab_size=5)
    with pytest.raises(ValueError, match="vocab_size"):
        mlp_structure(acts, toks, fit, held, vocab_size=3)
    with pytest.raises(ValueError, match="overlap"):
        mlp_structure(acts, toks, fit, np.arange(50, 100), vocab_size=5)
    with pytest.raises(ValueError, match="eval_rows"):
        mlp_structure(acts, toks, fit, np.arange(60, 101), vocab_size=5)
    with pytest.raises(ValueError, match="no variance"):
        mlp_structure(np.ones_like(acts), toks, fit, held, vocab_size=5)


def test_pruning_removes_only_merges_that_never_fire_and_keeps_the_encoding():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["zebra zebra zebra quokka quokka"] * 20 + ["the cat sat on the mat"] * 50, trainer=trainer)
    corpus = ["the cat sat on the mat"] * 5  # the zebra and quokka merges never fire here
    counts = np.bincount([i for t in corpus for i in tok.encode(t).ids], minlength=tok.get_vocab_size())
    prune_unused_merges = _build_module().prune_unused_merges
    pruned, n = prune_unused_merges(tok, counts)
    assert n > 0, "merges built only for words absent from the corpus should be pruned"
    assert pruned.get_vocab_size() == tok.get_vocab_size() - n
    for text in corpus + ["zebra", "any text at all: ü 東"]:
        assert pruned.decode(pruned.encode(text).ids) == text, "every text must still round-trip"
    assert [pruned.id_to_token(i) for i in pruned.encode(corpus[0]).ids] == \
        [tok.id_to_token(i) for i in tok.encode(corpus[0]).ids], "the corpus must encode to the same tokens"
    assert pruned.token_to_id("<|endoftext|>") == 0
    again, n2 = prune_unused_merges(pruned, np.bincount([i for t in corpus for i in pruned.encode(t).ids],
                                                        minlength=pruned.get_vocab_size()))
    assert n2 == 0, "pruning twice must change nothing the second time"


def test_the_shipped_model_is_more_than_a_token_lookup():
    info = offline_model_info()
    assert "current_token_r2" in info, "data/tiny_lm/training.json lacks the MLP measure; rebuild: python scripts/build_tiny_lm.py"
    assert info["current_token_r2"] < 0.5, (
        f"the current token explains {info['current_token_r2']:.0%} of the shipped model's MLP variance; the course "
        "promises under 50% (a model that is more than a token lookup). Train longer: python scripts/build_tiny_lm.py")
    size = sum(p.stat().st_size for p in model_dir().iterdir())
    assert size < 10e6, f"data/tiny_lm is {size / 1e6:.1f} MB; keep the checkpoint under 10 MB"


def test_the_shipped_readme_is_what_a_rebuild_writes():
    info = json.loads((model_dir() / "training.json").read_text())
    written = _build_module()._readme(info)
    assert "python scripts/build_tiny_lm.py --steps" in written, "the README must give the command that rebuilds the model"
    assert (model_dir() / "README.md").read_text() == written, (
        "data/tiny_lm/README.md differs from what scripts/build_tiny_lm.py writes for its training.json")


def test_the_build_script_runs_from_the_command_line():
    done = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--steps" in done.stdout and "--batch" in done.stdout and "--out" in done.stdout, done.stdout
