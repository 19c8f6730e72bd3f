"""The resampling of benchmarks/sample_efficiency.py: a revived latent should land on a feature
the dictionary is missing, not on the L1 penalty's shrinkage of the features it already has."""
import importlib.util
import sys
from pathlib import Path

import torch

from helpers.data import GroundTruthConfig, GroundTruthData

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sample_efficiency.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("sample_efficiency", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sample_efficiency"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _revived_cosines(se, to: str, seed: int) -> torch.Tensor:
    """A tied SAE that holds every planted feature but four, with a threshold that shrinks every
    active coefficient by 0.2 (as an L1 penalty does); the four latents are resampled."""
    torch.manual_seed(seed)
    data = GroundTruthData(GroundTruthConfig(n_features=64, d=256, seed=seed, correlated=False, decay=1.0))
    F = data.features
    missing = torch.tensor([3, 17, 40, 51])
    W_dec = F.clone()[None]                                                   # (1, G, h)
    W_dec[0, missing] = torch.nn.functional.normalize(torch.randn(4, 256), dim=-1)
    W_enc, b_enc, b_dec = W_dec.transpose(1, 2).clone(), torch.full((1, 1, 64), -0.2), torch.zeros(1, 1, 256)
    opt = torch.optim.Adam([W_enc, W_dec, b_enc])
    for p in (W_enc, W_dec, b_enc):
        opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    dead = torch.zeros(1, 64, dtype=torch.bool)
    dead[0, missing] = True
    se.resample(opt, W_enc, W_dec, b_enc, b_dec, data, dead, to)
    return (W_dec[0, missing] @ F[missing].T).max(-1).values                 # (4,) best match among the missing


def test_refit_resampling_points_revived_latents_at_missing_features():
    se = _benchmark()
    refit = torch.cat([_revived_cosines(se, "refit", s) for s in range(3)])
    plain = torch.cat([_revived_cosines(se, "residual", s) for s in range(3)])
    # Medians: now and then a pick is a sample whose residual is a small present feature that its
    # latent failed to fire on (the threshold), and that pick misses with either target.
    assert refit.median() >= 0.95, (
        f"latents revived towards the refitted residual should point at a missing feature (median cosine "
        f"{refit.median():.3f} over 12, want >= 0.95): check refit_on_support and the sampling by squared loss")
    assert refit.median() >= plain.median() + 0.1, (
        f"the refit should aim better than the plain residual, which carries the shrinkage of the active "
        f"latents (median cosine {refit.median():.3f} against {plain.median():.3f})")
