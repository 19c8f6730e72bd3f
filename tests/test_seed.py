"""One seed knob: COURSE_SEED moves every random stream of the course, and nothing else does.

A reader who runs a notebook twice with the same COURSE_SEED must get the same numbers, and a
helper's result must not depend on what happened to draw random numbers before it (a cell run
twice, a figure that sampled points, an extra cell of the reader's own).
"""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.device import course_seed, rng, seed_everything, stream_seed
from helpers.paths import cache_key
from helpers.sae import SAE, ResampleConfig, SAEConfig, train_sae

HELPERS = Path(__file__).resolve().parents[1] / "helpers"

# torch functions that draw random numbers; each must be given generator=...
_TORCH_DRAWS = {"rand", "randn", "randint", "randperm", "multinomial", "normal", "bernoulli", "poisson",
                "rand_like", "randn_like", "randint_like"}
_INPLACE_DRAWS = {"uniform_", "normal_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_",
                  "log_normal_", "orthogonal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                  "xavier_normal_", "trunc_normal_"}


def _global_draws(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, call) of every draw from a global generator in one module's syntax tree."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, owner = node.func.attr, node.func.value
        has_gen = any(k.arg == "generator" for k in node.keywords)
        owner_text = ast.unparse(owner)
        if owner_text == "torch" and name in _TORCH_DRAWS and not has_gen:
            found.append((node.lineno, ast.unparse(node)[:80]))
        elif name in _INPLACE_DRAWS and not has_gen:
            found.append((node.lineno, ast.unparse(node)[:80]))
        elif owner_text in ("np.random", "numpy.random"):
            if name != "default_rng" or not node.args:  # default_rng(seed) is an explicit generator
                found.append((node.lineno, ast.unparse(node)[:80]))
        elif owner_text == "torch" and name == "manual_seed":
            found.append((node.lineno, ast.unparse(node)[:80]))
    return found


def test_the_scan_finds_global_draws():
    """The scan itself: it must flag each kind of global draw and pass explicit generators."""
    bad = ("torch.rand(3)\ntorch.multinomial(p, 2)\ntorch.randperm(5)\nnp.random.rand(3)\n"
           "np.random.default_rng()\nw.normal_()\ntorch.manual_seed(0)\n")
    assert len(_global_draws(ast.parse(bad))) == 7
    good = ("torch.rand(3, generator=g)\ntorch.multinomial(p, 2, generator=g)\nnp.random.default_rng(s)\n"
            "nn.init.orthogonal_(w, generator=g)\n")
    assert _global_draws(ast.parse(good)) == []


def test_helpers_never_draw_from_a_global_generator():
    offenders = []
    for path in sorted(HELPERS.rglob("*.py")):
        if path.name == "device.py":  # seed_everything sets them
            continue
        for line, call in _global_draws(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(HELPERS.parent)}:{line}: {call}")
    assert not offenders, ("these helper calls draw from torch's or NumPy's global generator, so their result "
                           "depends on whatever ran before them; pass generator=... seeded by "
                           "helpers.device.stream_seed:\n" + "\n".join(offenders))


def _resampling_run(unrelated_draws: int, monkeypatch) -> tuple[torch.Tensor, np.ndarray, int]:
    """A small SAE trained with resampling of dead latents, after some unrelated global draws;
    returns its decoder, its final L0 and how many latents were revived."""
    import helpers.sae.train as train_module
    revived = []
    original = train_module.resample_latents_

    def counting(*args, **kwargs):
        revived.append(original(*args, **kwargs))
        return revived[-1]

    monkeypatch.setattr(train_module, "resample_latents_", counting)
    torch.manual_seed(unrelated_draws)
    torch.rand(unrelated_draws)            # what a reader's own cell might do in between
    np.random.rand(unrelated_draws)
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16, seed=0))
    cfg = SAEConfig(d_in=16, d_sae=128, l1_coeffs=(3.0,), steps=200, batch_size=64, lr=3e-3, log_every=40,
                    resample=ResampleConfig(every=40, dead_after=20, to="refit"), seed=0)
    sae = SAE(cfg)
    log = train_sae(sae, data.sample, progress=False)
    return sae.W_dec.detach().clone(), log.final()["l0"], sum(revived)


def test_same_course_seed_same_run_even_after_unrelated_random_calls(monkeypatch):
    monkeypatch.setenv("COURSE_SEED", "3")
    W_a, l0_a, revived_a = _resampling_run(5, monkeypatch)
    W_b, l0_b, revived_b = _resampling_run(17, monkeypatch)
    assert revived_a > 0, "no latent was resampled: this run cannot tell whether resampling is seeded"
    assert torch.equal(W_a, W_b) and np.array_equal(l0_a, l0_b) and revived_a == revived_b, (
        "two runs with the same COURSE_SEED differ after different unrelated torch.rand / np.random calls: "
        "some step of train_sae (resampling?) draws from a global generator")


def test_another_course_seed_moves_every_stream(monkeypatch):
    monkeypatch.delenv("COURSE_SEED", raising=False)
    base = (stream_seed(0, "ground-truth"), GroundTruthData(GroundTruthConfig(n_features=32, d=16)).features,
            SAE(SAEConfig(d_in=16, d_sae=32)).W_dec.detach().clone(), torch.rand(4, generator=rng(1)),
            cache_key({"a": 1}))
    monkeypatch.setenv("COURSE_SEED", "1")
    other = (stream_seed(0, "ground-truth"), GroundTruthData(GroundTruthConfig(n_features=32, d=16)).features,
             SAE(SAEConfig(d_in=16, d_sae=32)).W_dec.detach().clone(), torch.rand(4, generator=rng(1)),
             cache_key({"a": 1}))
    assert base[0] != other[0]
    for what, a, b in zip(("ground-truth features", "SAE init", "rng(1)"), base[1:4], other[1:4]):
        assert not torch.equal(a, b), f"{what} did not change with COURSE_SEED"
    assert base[4] != other[4], "a cache entry of COURSE_SEED=0 would be reused for COURSE_SEED=1"
    monkeypatch.setenv("COURSE_SEED", "0")
    assert stream_seed(0, "ground-truth") == base[0] and cache_key({"a": 1}) == base[4]


def test_seed_everything_follows_course_seed(monkeypatch):
    monkeypatch.setenv("COURSE_SEED", "0")
    seed_everything(0)
    a = torch.rand(3)
    monkeypatch.setenv("COURSE_SEED", "2")
    seed_everything(0)
    b = torch.rand(3)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5"])
def test_a_bad_course_seed_says_what_to_set(monkeypatch, raw):
    monkeypatch.setenv("COURSE_SEED", raw)
    with pytest.raises(ValueError, match="COURSE_SEED"):
        course_seed()
