"""Resampling (helpers.sae.resample, used by train_sae and benchmarks/sample_efficiency.py): a
revived latent should land on a feature the dictionary is missing, not on the L1 penalty's
shrinkage of the features it already has; and train_sae's resampling should pay at the course's sizes."""
from dataclasses import replace

import pytest
import torch

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.metrics import mmcs
from helpers.sae import SAE, ResampleConfig, SAEConfig, train_sae
from helpers.sae.resample import POOL, redundant, resample_latents_


def _revived_cosines(to: str, seed: int) -> torch.Tensor:
    """A tied SAE that holds every planted feature but four, with a threshold that shrinks every
    active coefficient by 0.2 (as an L1 penalty does); the four latents are resampled."""
    gen = torch.Generator().manual_seed(seed)
    data = GroundTruthData(GroundTruthConfig(n_features=64, d=256, seed=seed, correlated=False, decay=1.0))
    F = data.features
    missing = torch.tensor([3, 17, 40, 51])
    W_dec = F.clone()[None]                                                   # (1, G, h)
    W_dec[0, missing] = torch.nn.functional.normalize(torch.randn(4, 256, generator=gen), dim=-1)
    W_enc, b_enc, b_dec = W_dec.transpose(1, 2).clone(), torch.full((1, 64), -0.2), torch.zeros(1, 256)
    opt = torch.optim.Adam([W_enc, W_dec, b_enc])
    for p in (W_enc, W_dec, b_enc):
        opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    dead = torch.zeros(1, 64, dtype=torch.bool)
    dead[0, missing] = True
    assert resample_latents_(opt, W_enc, W_dec, b_enc, b_dec, data.sample(POOL[to]), dead, to,
                             generator=gen) == 4
    return (W_dec[0, missing] @ F[missing].T).max(-1).values                 # (4,) best match among the missing


def test_refit_resampling_points_revived_latents_at_missing_features():
    refit = torch.cat([_revived_cosines("refit", s) for s in range(3)])
    plain = torch.cat([_revived_cosines("residual", s) for s in range(3)])
    # Medians: now and then a pick is a sample whose residual is a small present feature that its
    # latent failed to fire on (the threshold), and that pick misses with either target.
    assert refit.median() >= 0.95, (
        f"latents revived towards the refitted residual should point at a missing feature (median cosine "
        f"{refit.median():.3f} over 12, want >= 0.95): check refit_on_support and the sampling by squared loss")
    assert refit.median() >= plain.median() + 0.1, (
        f"the refit should aim better than the plain residual, which carries the shrinkage of the active "
        f"latents (median cosine {refit.median():.3f} against {plain.median():.3f})")


def test_redundant_marks_the_rarer_of_two_near_duplicates():
    W_dec = torch.eye(4)[None].repeat(1, 1, 1)                                # (1, 4, 4)
    W_dec[0, 3] = torch.tensor([0.95, 0.0, 0.0, 0.31])                        # a near-copy of latent 0
    fires = torch.tensor([[10.0, 5.0, 5.0, 2.0]])
    assert redundant(W_dec, fires, 0.8).tolist() == [[False, False, False, True]], \
        "the rarer latent of a pair with cosine 0.95 > 0.8 should be marked, and nothing else"
    assert not redundant(W_dec, fires, 0.0).any(), "cos=0 should switch the duplicate check off"


def test_train_sae_resampling_revives_dead_latents_and_recovers_more_features():
    """A quarter of a 1x SAE's latents start dead (bias -100): without resampling they stay dead
    and their features unmatched; train_sae's resampling revives them (measured at G=64, h=32:
    MMCS 0.82 with 16 dead against 0.96 with none)."""
    data_cfg = GroundTruthConfig(n_features=64, d=32, seed=3)
    base = SAEConfig(d_in=32, d_sae=64, l1_coeffs=(0.3,), lr=1e-2, steps=1000, lr_schedule="warmup_cosine",
                     renorm_decoder=True)
    res = {}
    for every in (0, 25):
        torch.manual_seed(0)
        sae = SAE(replace(base, resample=ResampleConfig(every=every, until=0.75) if every else None), device="cpu")
        with torch.no_grad():
            sae.b_enc[:, :16] = -100.0
        log = train_sae(sae, GroundTruthData(data_cfg).sample, progress=False)
        res[every] = (float(mmcs(sae.decoder_directions().detach(), GroundTruthData(data_cfg).features)[0]),
                      int(log.dead[-1, 0]))
    assert res[0][1] == 16, f"without resampling the 16 latents started dead should stay dead, got {res[0][1]}"
    assert res[25][1] == 0, f"resampling every 25 steps should revive every dead latent, {res[25][1]} still dead"
    assert res[25][0] >= res[0][0] + 0.05, (
        f"the revived latents should find the features nobody held (MMCS {res[25][0]:.3f} with resampling "
        f"against {res[0][0]:.3f} without): check train_sae's resampling call and helpers.sae.resample")


@pytest.mark.parametrize("field, value", [("every", -1), ("dead_after", 0), ("duplicate_cos", 1.5), ("until", 0.0),
                                          ("to", "noise")])
def test_resampling_settings_are_checked_by_name(field, value):
    with pytest.raises(ValueError, match=rf"resample\.{field}\b"):
        SAEConfig(d_in=4, d_sae=8, resample={"every": 10, field: value})


def test_resampling_is_refused_for_variants_it_does_not_know():
    with pytest.raises(ValueError, match=r"resample .*architecture='standard' only, got 'topk': pass resample=None"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2, resample=ResampleConfig(every=10))


def test_grid_sizes_start_unrelated_and_agreement_averages_every_larger_size():
    """``--grid`` gives each size its own initialisation seed and sample stream: untrained, its sizes
    agree with larger ones only at chance, where sizes drawn from one seed agree far above it (an
    orthogonal init of a larger matrix starts with the smaller one's numbers); and a size's agreement
    is the mean over every larger size, as notebook 03 and the report average it."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import sample_efficiency as se

    rep = se.grid_report(4096, GroundTruthConfig(n_features=64, d=32, seed=0), alphas=(0.3,), data_seeds=(0,))
    seed = rep["seeds"][0]
    chance = rep["random_mmcs_with_larger"]
    for k, (own, shared) in enumerate(zip(seed["untrained_mmcs_with_larger"], seed["untrained_one_seed_mmcs_with_larger"])):
        assert abs(own - chance[k]) < 0.05, f"size {k}: untrained sizes from their own seeds agree at {own}, chance {chance[k]}"
        assert shared > chance[k] + 0.2, f"size {k}: sizes from one seed should agree far above chance, got {shared}"
    a, b, c = (torch.nn.functional.normalize(torch.randn(1, J, 32, generator=torch.Generator().manual_seed(J)), dim=-1)
               for J in (8, 16, 32))
    got = se.mean_mmcs_with_larger([a, b, c])
    assert got[2] is None and abs(got[0][0] - (float(mmcs(b, a)[0]) + float(mmcs(c, a)[0])) / 2) < 1e-6, \
        "a size's agreement should be the mean MMCS with every larger size, not with the next one only"


def test_recipes_train_through_train_sae_with_mmcs_at_every_check():
    """The benchmark's recipes run on the course's trainer: its sample counts become steps, and the
    MMCS is read at every check (each log row) and at the end, per instance."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import sample_efficiency as se

    recipe = replace(se.OURS, alphas=(0.1, 0.3), resample_every=1024, dead_after=2048)
    cfg = se.recipe_config(recipe, 32, 64, 5120, 1280)
    assert (cfg.steps, cfg.log_every, cfg.resample.every, cfg.resample.dead_after, cfg.dead_window) == (20, 5, 4, 8, 8)
    assert se.recipe_config(se.REPORT, 32, 64, 5120, 1280).resample is None, "a recipe without resampling has none"
    assert cfg.renorm_decoder and cfg.lr_schedule == "warmup_cosine" and cfg.l1_coeffs == (0.1, 0.3)
    run = se.train(recipe, 5120, 1280, GroundTruthConfig(n_features=64, d=32, seed=0))
    assert run.samples == [1280, 2560, 3840, 5120] and [len(row) for row in run.mmcs] == [2] * 4
    assert run.silent_for.shape == (2, 64) and run.decoder.shape == (2, 64, 32) and len(run.dead) == len(run.l0) == 2
    assert torch.allclose(run.decoder.norm(dim=-1), torch.ones(2, 64)), "the run's decoder should have unit rows"
