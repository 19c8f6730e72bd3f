"""Notebook 05's helpers: per-instance TopK, the recovery scores, the suspects' signature, absorption,
and the reference results at a reduced size (G = 64 features in h = 32 dimensions)."""
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers.beyond import (PerInstanceTopK, Scores, absorption_scores, at_matched_l0, lm_signature, score_sae,
                            suspect_config, train_cached)
from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.diagnostics import run_grid
from helpers.diagnostics.result import GridResult
from helpers.sae import SAE, AuxKConfig, BatchTopKSAE, SAEConfig, TopKSAE, train_sae
from helpers.sae.config import AUXK_COEFF, AUXK_DEAD_WINDOW

SMALL = GroundTruthConfig(n_features=64, d=32, seed=0)


def test_per_instance_topk_keeps_its_own_k():
    cfg = SAEConfig(d_in=8, d_sae=16, l1_coeffs=(0.0, 0.0, 0.0), architecture="topk", k=5)
    sae = PerInstanceTopK(cfg, ks=(1, 3, 5), device="cpu")
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: the k largest all survive the ReLU
    active = (sae.encode(torch.randn(32, 8)) > 0).sum(-1)  # (3, 32)
    for i, k in enumerate((1, 3, 5)):
        assert (active[i] == k).all(), f"instance {i} should keep exactly k={k} latents, kept {active[i].unique().tolist()}"


def test_per_instance_topk_leaves_plain_topk_in_the_registry():
    cfg = SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2)
    assert type(SAE(cfg, device="cpu")) is TopKSAE, "SAE(cfg) must still build the plain TopKSAE for 'topk'"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_keys", "no_entry"])
def test_a_damaged_train_cached_file_is_retrained_with_a_warning(tmp_path, monkeypatch, damage):
    """A truncated weights file raised EOFError on every rerun: the cache never repaired itself."""
    from helpers.store import CacheWarning

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    cfg = SAEConfig(d_in=32, d_sae=16, l1_coeffs=(0.1, 1.0), steps=20, log_every=10, dead_window=10)
    first = train_cached(cfg, GroundTruthData(SMALL, device="cpu"), "test-damaged", device="cpu")
    (folder,) = (tmp_path / "beyond").glob("test-damaged-*")
    path = folder / "stack.npz"
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "wrong_keys":
        np.savez(path, weights=np.zeros(3))
    else:
        (folder / "entry.json").unlink()  # a run killed before it finished: trained again without a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = train_cached(cfg, GroundTruthData(SMALL, device="cpu"), "test-damaged", device="cpu")
    said = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    if damage == "no_entry":
        assert not said, f"an unfinished entry is trained again without a warning: {said}"
    else:
        assert len(said) == 1 and folder.name in said[0] and "damaged" in said[0], said
    for k, v in first.final.items():
        assert np.array_equal(again.final[k], v), f"retraining must give the first run's numbers ({k} differs)"
    for k, v in first.sae.state_dict().items():
        assert torch.equal(again.sae.state_dict()[k], v), f"retraining must give the first run's weights ({k} differs)"
    assert sorted(p.name for p in folder.iterdir()) == ["entry.json", "stack.npz"], (
        "the repaired entry must be written again, in the same format")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        loaded = train_cached(cfg, GroundTruthData(SMALL, device="cpu"), "test-damaged", device="cpu")  # no warning
    assert np.array_equal(loaded.final["l0"], first.final["l0"]) and loaded.final["l0"].dtype == first.final["l0"].dtype
    for k, v in first.sae.state_dict().items():
        assert torch.equal(loaded.sae.state_dict()[k], v), f"the loaded stack's {k} differs from the trained one"


def test_what_is_trained_and_scored_does_not_depend_on_the_cache(tmp_path, monkeypatch):
    """Training and scoring drew from the data's one stream, which a cache hit does not advance: the
    second stack, and every score after it, came out differently when the first was reopened from
    the cache instead of trained. Each now draws from a stream of its own."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    cfg = SAEConfig(d_in=32, d_sae=16, l1_coeffs=(0.1, 1.0), steps=20, log_every=10, dead_window=10)

    def notebook(data):   # two stacks trained (or reopened) in turn, then scored
        a = train_cached(cfg, data, "test-order-a", device="cpu")
        b = train_cached(replace(cfg, seed=1), data, "test-order-b", device="cpu")
        return b, score_sae(a.sae, data, n=512)

    fresh_b, fresh_scores = notebook(GroundTruthData(SMALL, device="cpu"))     # both trained
    (tmp_path / "beyond").rename(tmp_path / "kept")
    train_cached(cfg, GroundTruthData(SMALL, device="cpu"), "test-order-a", device="cpu")  # only the first cached
    data = GroundTruthData(SMALL, device="cpu")
    data.sample(1000)                                                           # a reader's look at the data
    b, scores = notebook(data)                                                  # a: reopened; b: trained
    for k, v in fresh_b.sae.state_dict().items():
        assert torch.equal(b.sae.state_dict()[k], v), (
            f"the second stack's {k} differs when the first came from the cache: training must draw from its own stream")
    assert scores == fresh_scores, ("score_sae must score on the same samples whatever was drawn before: "
                                    f"{scores[0]} vs {fresh_scores[0]}")


def test_per_instance_topk_refuses_bad_ks():
    cfg = SAEConfig(d_in=8, d_sae=16, l1_coeffs=(0.0, 0.0), architecture="topk", k=2)
    with pytest.raises(ValueError, match="ks"):
        PerInstanceTopK(cfg, ks=(1, 20), device="cpu")


def test_scores_of_the_true_dictionary_are_perfect():
    data = GroundTruthData(SMALL, device="cpu")
    cfg = SAEConfig(d_in=32, d_sae=64, l1_coeffs=(0.0,))
    sae = SAE(cfg, device="cpu")
    with torch.no_grad():
        sae.W_dec[0] = data.features
        sae.W_enc[0] = data.features.T
    (row,) = score_sae(sae, data, n=2048)
    assert row.mmcs > 0.999 and row.one_to_one > 0.999, f"the truth itself must score 1, got {row.mmcs}, {row.one_to_one}"
    assert row.recovered == 64 and row.duplicates == 0
    assert row.mcc > 0.999, f"the truth matched to itself has MCC 1, got {row.mcc}"
    assert abs(row.true_l0 - 5) < 0.3, f"the data has 5 active features on average, measured {row.true_l0:.2f}"


def test_firing_scores_count_every_matched_pair_not_only_the_good_ones():
    from helpers.beyond.scores import matched_firing
    from helpers.recovery import FiringScores
    # pair 0 perfect; pair 1 a latent that never fires (precision NaN there); pair 2 a feature never seen
    fire = FiringScores(np.array([1.0, np.nan, 0.5]), np.array([1.0, 0.0, np.nan]), 1.0, 1.0, 1.0)
    p, r, f1 = matched_firing(fire)
    assert (p, r, f1) == (0.5, 0.5, 0.5), ("a latent that never fires must count precision 0 (not be dropped), "
                                           f"an unseen feature must be left out: got {(p, r, f1)}")


def test_mcc_matches_on_absolute_cosine_as_synthsaebench_does():
    from helpers.beyond.scores import mcc
    from helpers.recovery import one_to_one
    F = GroundTruthData(SMALL, device="cpu").features.float()
    flipped = torch.cat([-F[:32], F[32:]])                  # half the latents point against their feature
    assert mcc(flipped, F) > 0.999, "MCC matches on |cosine|: a flipped latent still counts"
    assert one_to_one(flipped, F).mean_cosine < 0.75, "the course's one-to-one matching counts only positive cosines"
    assert abs(mcc(F[:32], F) - 1.0) < 1e-6, "MCC averages over the min(G, J) matched pairs: a half dictionary scores 1"


def test_matched_l0_picks_the_nearest_on_a_log_scale():
    rows = [Scores(f"l0={v}", *([0.0] * 10), v, 5.0) for v in (0.0, 2.0, 4.0, 12.0)]
    assert at_matched_l0(rows, 5.0).l0 == 4.0
    assert at_matched_l0(rows, 6.0).l0 == 4.0, "6/4 is nearer than 12/6 on a log scale"
    assert at_matched_l0(rows, 7.5).l0 == 12.0, "12/7.5 is nearer than 7.5/4 on a log scale"
    with pytest.raises(ValueError, match="active"):
        at_matched_l0(rows[:1], 5.0)


def _grid(dead, mmcs_larger, ssll_recon, d_in=32, ref=64):
    S, L = np.shape(dead)
    J = np.array([32, 64, 128, 256][:S])
    return GridResult(d_sae_values=J, l1_values=np.logspace(-1, 0, L), recon_loss=np.exp(np.asarray(ssll_recon, float)),
                      l1_loss=np.ones((S, L)), l0=np.full((S, L), 5.0), dead=np.asarray(dead, float),
                      mmcs_ground_truth=np.full((S, L), 0.9), mmcs_larger=np.asarray(mmcs_larger, float),
                      reference_size=ref, config={"sae": {"d_in": d_in}})


def test_lm_signature_reads_each_feature():
    flat = np.zeros((3, 3))
    rising = np.tile([0.0, 1.0, 2.0], (3, 1))  # SSLL climbs with alpha and never comes down: no peak
    lm_like = lm_signature(_grid(flat, [[0.2] * 3, [0.2] * 3, [np.nan] * 3], rising))
    assert lm_like["no dead latents"] and lm_like["low MMCS between dictionaries"] and lm_like["no SSLL peak"]
    toy_like = lm_signature(_grid([[0, 0, 0], [0, 0, 0], [30, 40, 50]], [[0.98] * 3, [0.97] * 3, [np.nan] * 3],
                                  [[0.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 1.0]]))
    assert not toy_like["no dead latents"], "30 dead latents at 2x must not count as 'no dead latents'"
    assert not toy_like["low MMCS between dictionaries"], "MMCS 0.98 between dictionaries is the toy signature"
    assert not toy_like["no SSLL peak"], "SSLL 2 above both ends of the alpha axis is a peak"


def test_suspect_configs_change_one_thing():
    assert suspect_config(SMALL, "report's data") == SMALL
    assert suspect_config(SMALL, "G/h = 8").d == 8
    assert suspect_config(SMALL, "background noise").noise_std > 0
    with pytest.raises(ValueError, match="unknown suspect"):
        suspect_config(SMALL, "cosmic rays")


def test_absorption_needs_a_hierarchy():
    sae = SAE(SAEConfig(d_in=32, d_sae=64), device="cpu")
    with pytest.raises(ValueError, match="hierarchy"):
        absorption_scores(sae, GroundTruthData(SMALL, device="cpu"))


def test_absorption_of_a_dictionary_that_folds_parents_into_children():
    cfg = replace(SMALL, n_parents=4, children_per_parent=3)
    data = GroundTruthData(cfg, device="cpu")
    F = data.features
    D = F.clone()
    for p in data.parents.tolist():  # each child latent reads and writes parent + child: the parent is absorbed
        for c in range(p + 1, p + 4):
            D[c] = (F[p] + F[c]) / (F[p] + F[c]).norm()
    sae = SAE(SAEConfig(d_in=32, d_sae=64, l1_coeffs=(0.0,)), device="cpu")
    with torch.no_grad():
        sae.W_dec[0], sae.W_enc[0] = D, D.T
        sae.b_enc.fill_(-0.9)  # only a latent whose own direction is present clears the bias
    (s,) = absorption_scores(sae, data, n=4096)
    with torch.no_grad():
        sae.W_dec[0], sae.W_enc[0] = F, F.T
    (plain,) = absorption_scores(sae, data, n=4096)
    assert s.child_parent_cosine.min() > 0.5, "child latents that hold the parent direction must show it (~0.7)"
    assert plain.child_parent_cosine.max() < 0.5, "the true dictionary's child latents do not hold the parent"
    assert s.parent_cosine.min() > 0.99 and plain.parent_cosine.min() > 0.99



def test_absorption_scores_do_not_depend_on_what_was_sampled_before():
    """A cached SAE must score as a freshly trained one: the evaluation draws a fixed stream."""
    cfg = replace(SMALL, n_parents=4, children_per_parent=3)
    sae = SAE(SAEConfig(d_in=32, d_sae=64, l1_coeffs=(0.0,)), device="cpu")
    fresh = GroundTruthData(cfg, device="cpu")
    used = GroundTruthData(cfg, device="cpu")
    used.sample(5000)                                                   # as if an SAE had trained on it
    (a,), (b,) = absorption_scores(sae, fresh, n=2048), absorption_scores(sae, used, n=2048)
    assert a.absorbed == b.absorbed and torch.equal(torch.as_tensor(a.parent_recall), torch.as_tensor(b.parent_recall))
    after = used.sample(4)
    again = GroundTruthData(cfg, device="cpu")
    again.sample(5000)
    assert torch.equal(after, again.sample(4)), "scoring must leave the training stream where it was"


@pytest.fixture(scope="module")
def small_runs():
    """L1, and TopK with AuxK, at J = G on the reduced data, 3000 steps (about 20 s on one idle CPU core)."""
    data = GroundTruthData(SMALL, device="cpu")
    base = SAEConfig(d_in=32, d_sae=64, lr=3e-3, steps=3000, dead_window=500)
    l1 = train_cached(replace(base, l1_coeffs=(0.3, 1.0)), data, "test-l1", device="cpu", cache=False).sae
    tk = train_cached(replace(base, architecture="topk", k=5, l1_coeffs=(0.0,)), data, "test-topk", ks=(5,),
                      device="cpu", cache=False, aux_coeff=AUXK_COEFF)
    return data, score_sae(l1, data), score_sae(tk.sae, data)[0], tk.final


def test_topk_at_the_true_l0_matches_the_best_l1(small_runs):
    data, l1_rows, tk, final = small_runs
    best = max(l1_rows, key=lambda r: r.mmcs)
    assert abs(tk.l0 - tk.true_l0) < 0.3, f"TopK with k=5 must have L0 5, got {tk.l0:.2f}"
    # Without AuxK, TopK scored 0.958-0.968 MMCS and 0.91-0.93 one-to-one here against the best L1's
    # 0.980-0.988 and 0.96-0.98: latents that die early never come back, and their features go missing.
    assert final["dead"][0] <= 1, (f"TopK + AuxK ended with {final['dead'][0]} dead latents: AuxK should revive them "
                                   "(check train_sae passes its firing record and TopKSAE.forward adds aux_loss in training)")
    assert tk.mmcs > best.mmcs - 0.02, (f"TopK+AuxK at k = true L0 has MMCS {tk.mmcs:.3f}, more than 0.02 below the best "
                                        f"L1's {best.mmcs:.3f}: look for dead latents (AuxK window, coefficient)")
    assert tk.one_to_one > best.one_to_one - 0.02, (f"TopK+AuxK one-to-one {tk.one_to_one:.3f} vs best L1 "
                                                    f"{best.one_to_one:.3f}: more than 0.02 apart")
    assert tk.shrinkage > best.shrinkage, "TopK penalises no magnitude, so it must shrink less than L1 at its best MMCS"


def _half_dead_topk(aux_coeff, seed=0, cls=TopKSAE, steps=10_000):
    """TopK on 16 latents, k = 8: latents 0-7 always win (b_enc 5), latents 8-15 never do (b_enc 1, still
    positive); with the firing record of ``_half_dead_record`` they have not fired for a whole AuxK window.
    ``aux_coeff`` 0: no AuxK."""
    cfg = SAEConfig(d_in=8, d_sae=16, l1_coeffs=(0.0,), architecture="topk", k=8, seed=seed, steps=steps, log_every=10,
                    auxk=AuxKConfig(coeff=aux_coeff, k=8) if aux_coeff else None)
    sae = cls(cfg, device="cpu")
    with torch.no_grad():
        sae.b_enc[:, :8], sae.b_enc[:, 8:] = 5.0, 1.0
    return sae


def _half_dead_record(sae):
    """(1, 16) batches since each latent last fired, as train_sae passes it: 8-15 silent for a window."""
    record = torch.zeros(1, 16, dtype=torch.long)
    record[:, 8:] = AUXK_DEAD_WINDOW if sae.cfg.auxk is None else sae.cfg.auxk.dead_window
    return record


def test_auxk_trains_dead_latents_only():
    x = 0.1 * torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    grads = []
    for coeff in (0.0, 1.0):
        sae = _half_dead_topk(coeff)
        sae.train()
        out = sae(x, steps_since_fired=_half_dead_record(sae))
        assert (out.acts[..., 8:] == 0).all(), "the test needs latents 8-15 to lose every top-k contest"
        out.loss.backward()
        grads.append((sae.W_enc.grad.clone(), sae.W_dec.grad.clone(), sae.b_enc.grad.clone()))
    (e0, d0, b0), (e1, d1, b1) = grads
    assert torch.equal(e0[..., :8], e1[..., :8]) and torch.equal(d0[:, :8], d1[:, :8]) and torch.equal(b0[:, :8], b1[:, :8]), \
        "AuxK must leave the gradient of live latents unchanged"
    assert (e0[..., 8:] == 0).all(), "without AuxK a latent outside the top k gets no gradient at all (why it stays dead)"
    assert (e1[..., 8:].abs().sum(-2) > 0).all() and (d1[:, 8:].abs().sum(-1) > 0).all(), \
        "with AuxK every dead latent (in the top aux_k of the dead) must get encoder and decoder gradient"


@torch.no_grad()
def test_auxk_is_zero_without_dead_latents_and_outside_training():
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    sae = _half_dead_topk(1.0)
    sae.train()
    record = _half_dead_record(sae)
    out = sae(x, steps_since_fired=torch.zeros_like(record))  # nothing dead
    assert float(out.l1_loss) == 0.0, f"AuxK with no dead latent must add exactly 0, added {float(out.l1_loss)}"
    assert float(sae(x, steps_since_fired=record).l1_loss) > 0, "with dead latents AuxK must add a positive term in training"
    assert float(sae(x).l1_loss) == 0.0, "without the trainer's firing record no latent is dead: no AuxK term"
    sae.eval()
    assert float(sae(x, steps_since_fired=record).l1_loss) == 0.0, \
        "AuxK is a training term: eval-mode losses must not include it"
    dead = sae.dead_mask(record, sae(x).acts)
    pre, resid = sae.pre_acts(x), torch.zeros(1, 32, 8)
    assert float(sae.aux_loss(pre, resid + 1.0, torch.zeros_like(dead))) == 0.0, "no dead latent: no AuxK loss"


def test_dead_mask_counts_this_batch():
    sae = _half_dead_topk(1.0)
    W = sae.cfg.auxk.dead_window
    acts = torch.zeros(1, 2, 16)
    acts[0, 1, 0] = 1.0                                                    # latent 0 fires in this batch
    record = torch.tensor([[W + 5, W - 1, W - 2] + [0] * 13])
    assert sae.dead_mask(record, acts)[0, :3].tolist() == [False, True, False], (
        f"with {W} batches as the window: a latent that fires in this batch is live whatever its record; one "
        f"silent for {W - 1} batches before this one has now gone {W} and is dead; one silent for {W - 2} is not")


class _RecordingTopK(TopKSAE):
    """A TopK that keeps a copy of every firing record train_sae hands it (in ``seen``, a list)."""

    def forward(self, x, target=None, steps_since_fired=None):
        if steps_since_fired is not None:
            self.seen.append(steps_since_fired.clone())
        return super().forward(x, target, steps_since_fired)


def test_train_sae_owns_the_firing_record_and_a_forward_changes_no_state():
    sae = _half_dead_topk(1.0, cls=_RecordingTopK, steps=30)
    sae.seen = []
    x = 0.1 * torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    state = lambda: {**dict(sae.named_parameters()), **dict(sae.named_buffers())}  # noqa: E731 (non-persistent too)
    before = {k: v.detach().clone() for k, v in state().items()}
    sae.train()
    with torch.no_grad():
        sae(x, steps_since_fired=_half_dead_record(sae))
    assert before.keys() == state().keys() and all(torch.equal(before[k], v) for k, v in state().items()), \
        "a TopK forward pass must change no state"
    sae.seen.clear()
    gen = torch.Generator().manual_seed(3)
    log = train_sae(sae, lambda n: 0.1 * torch.randn(n, 8, generator=gen), progress=False)
    assert len(sae.seen) == 30, f"train_sae must pass its firing record on every step, passed it {len(sae.seen)} times"
    for step, record in enumerate(sae.seen):
        assert (record[0, :8] == 0).all() and (record[0, 8:] == step).all(), (
            f"before step {step} the record should read 0 for the latents that always fire and {step} for those that "
            f"never do, got {record[0].tolist()}")
    assert log.steps_since_fired[0].tolist() == [0] * 8 + [30] * 8, "the log's record should end where the steps do"


def test_auxk_settings_travel_with_the_config():
    cfg = SAEConfig(d_in=8, d_sae=16, l1_coeffs=(0.0, 0.0), architecture="batchtopk", k=2,
                    auxk=AuxKConfig(coeff=0.5, k=3))
    btk = SAE(cfg, device="cpu")
    assert type(btk) is BatchTopKSAE and btk.cfg.auxk == AuxKConfig(coeff=0.5, k=3, dead_window=AUXK_DEAD_WINDOW)
    assert btk.aux_k == 3
    one = PerInstanceTopK(replace(cfg, architecture="topk", auxk=AuxKConfig(coeff=0.5)), ks=(1, 2), device="cpu").select(1)
    assert one.cfg.auxk.coeff == 0.5 and one.aux_k == 4, "select must keep the AuxK settings (auxk.k defaults to d_in / 2)"
    with pytest.raises(TypeError):
        SAE(cfg, device="cpu", aux_coeff=0.5)  # AuxK is set in the config, not passed to the class
    for bad, field in ((dict(coeff=-1.0), "auxk.coeff"), (dict(coeff=0.0), "auxk.coeff"), (dict(k=0), "auxk.k"),
                       (dict(dead_window=0), "auxk.dead_window")):
        with pytest.raises(ValueError, match=rf"{field} must be .*pass"):
            AuxKConfig(**bad)
    for bad, field in ((dict(coeff="big"), "auxk.coeff"), (dict(k=2.5), "auxk.k"), (dict(dead_window=True), "auxk.dead_window")):
        with pytest.raises(TypeError, match=rf"{field} must be .*pass"):
            AuxKConfig(**bad)


def test_train_cached_aux_coeff_sets_the_configs_auxk():
    data = GroundTruthData(SMALL, device="cpu")
    base = SAEConfig(d_in=32, d_sae=64, steps=2, log_every=1, architecture="topk", k=5, l1_coeffs=(0.0,))
    sae = train_cached(base, data, "test-aux", device="cpu", cache=False, aux_coeff=0.25).sae
    assert sae.cfg.auxk == AuxKConfig(coeff=0.25), "aux_coeff must set the config's auxk (the paper's k and window)"
    kept = train_cached(replace(base, auxk=AuxKConfig(k=7)), data, "test-aux", device="cpu", cache=False, aux_coeff=0.25)
    assert kept.sae.cfg.auxk == AuxKConfig(coeff=0.25, k=7), "aux_coeff replaces only the coefficient of a set auxk"
    with pytest.raises(ValueError, match="aux_coeff .*not 'standard'"):
        train_cached(replace(base, architecture="standard"), data, "test-aux", device="cpu", cache=False, aux_coeff=0.25)


def test_jitter_noise_and_superposition_lower_the_best_mmcs():
    base = SAEConfig(d_in=32, d_sae=64, lr=3e-3, steps=1000, dead_window=500)
    best = {}
    for name in ("report's data", "feature jitter", "background noise", "G/h = 8"):
        cfg = suspect_config(SMALL, name)
        data = GroundTruthData(cfg, device="cpu")
        grid = run_grid(data.sample, replace(base, d_in=cfg.d), [1.0], [0.3, 1.0, 3.0], reference_size=64,
                        ground_truth=data.features, device="cpu", progress=False)
        best[name] = float(np.nanmax(grid.mmcs_ground_truth))
    for name in ("feature jitter", "background noise", "G/h = 8"):
        assert best[name] < best["report's data"] - 0.01, f"{name}: best MMCS {best[name]:.3f} vs {best}"


def test_selecting_one_instance_keeps_its_own_k():
    cfg = SAEConfig(d_in=8, d_sae=16, l1_coeffs=(0.0, 0.0), architecture="topk", k=4)
    sae = PerInstanceTopK(cfg, ks=(2, 4), device="cpu")
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    one = sae.select(0)
    assert int(one.ks[0]) == 2, "instance 0 was trained with k=2 and must keep it when taken out of the stack"
    assert ((one.encode(torch.randn(16, 8)) > 0).sum(-1) == 2).all()
