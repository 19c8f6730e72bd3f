"""The checks of notebook 04's exercises: the likely wrong solutions fail with their own message,
and the splice check (which needs a model, an SAE and tokens) passes its reference and falls
back to it for a stub. The reference and stub cases of the other two checks are in
tests/test_checks_common.py."""
import numpy as np
import pytest
import torch

from helpers import lm
from helpers.checks import lm as checks
from helpers.exercises import ExerciseError
from helpers.sae import SAE, SAEConfig


@pytest.fixture(scope="module")
def model():
    return lm.load_model(lm.OFFLINE_MODEL, device="cpu")


@pytest.fixture(scope="module")
def sae(model):
    return SAE(SAEConfig(d_in=model.cfg.d_mlp, d_sae=64, decoder_bias=True, seed=3))


@pytest.fixture(scope="module")
def tokens(model):
    return lm.corpus_token_windows(model, 32, seq_len=16)[:2]


def _stub(*args, **kwargs):
    raise NotImplementedError("exercise")


# --- splice ----------------------------------------------------------------------------
def test_splice_reference_passes(model, sae, tokens, capsys):
    assert checks.splice(checks.make_splice_reference, model, sae, tokens) is checks.make_splice_reference
    assert "✔" in capsys.readouterr().out


def test_splice_stub_returns_reference(model, sae, tokens, capsys):
    def make_splice(sae):
        def splice(acts, hook):
            raise NotImplementedError("exercise")
        return splice
    assert checks.splice(make_splice, model, sae, tokens) is checks.make_splice_reference
    assert "The idea:" in capsys.readouterr().out


def test_splice_overwriting_bos_fails(model, sae, tokens):
    def make_splice(sae):
        def splice(acts, hook):
            flat = acts.reshape(-1, acts.shape[-1]).to(sae.device, torch.float32)
            return sae.decode(sae.encode(flat))[0].reshape(acts.shape).to(acts.device, acts.dtype)
        return splice
    with pytest.raises(ExerciseError, match="BOS"):
        checks.splice(make_splice, model, sae, tokens)


def test_splice_without_dtype_handling_fails(model, sae, tokens):
    def make_splice(sae):
        def splice(acts, hook):
            out = acts.clone()
            out[:, 1:] = sae.decode(sae.encode(acts[:, 1:].reshape(-1, acts.shape[-1])))[0].reshape(acts[:, 1:].shape)
            return out
        return splice
    with pytest.raises(ExerciseError, match="dtype"):
        checks.splice(make_splice, model, sae, tokens)


# --- top contexts ----------------------------------------------------------------------
def test_top_contexts_crossing_windows_fails():
    def flat_windows(latent_acts, tokens, k=5, before=10, after=3):
        flat = tokens.reshape(-1)
        out = []
        for row in np.argsort(-latent_acts, kind="stable")[:k]:
            if latent_acts[row] <= 0:
                break
            lo = max(row - before, 0)
            out.append((flat[lo:row + after + 1], row - lo, float(latent_acts[row]), latent_acts[lo:row + after + 1]))
        return out
    with pytest.raises(ExerciseError, match="neighbouring window"):
        checks.top_contexts(flat_windows)


def test_top_contexts_smallest_first_fails():
    def ascending(latent_acts, tokens, k=5, before=10, after=3):
        return lm.top_contexts(latent_acts, tokens, k=100, before=before, after=after)[::-1][:k]
    with pytest.raises(ExerciseError, match="largest first"):
        checks.top_contexts(ascending)


# --- logit effects ---------------------------------------------------------------------
def test_latent_logits_without_w_out_fails():
    def no_w_out(sae, f, W_out, W_U):
        return sae.decoder_directions()[0, f] @ W_U
    with pytest.raises(ExerciseError, match="W_out"):
        checks.latent_logits(no_w_out)


def test_latent_logits_encoder_direction_fails():
    def encoder(sae, f, W_out, W_U):
        return sae.W_enc[0, :, f] @ W_out @ W_U
    with pytest.raises(ExerciseError, match="encoder"):
        checks.latent_logits(encoder)


def test_latent_logits_matches_the_model(model, sae):
    """The reference agrees with the logit effect read off the model by lm.residual_effects."""
    W_out, W_U = model.blocks[0].mlp.W_out, model.W_U
    got = checks.latent_logits_reference(sae, 5, W_out, W_U)
    want = (lm.residual_effects(model, sae.decoder_directions()[0, [5]].detach()) @ W_U)[0]
    assert torch.allclose(got, want, atol=1e-3), f"largest difference {float((got - want).abs().max()):.2e}"


# --- the nulls of the pair-geometry table (section 5) -------------------------------------
def _toy_geometry(m=6, seed=0):
    rng = np.random.default_rng(seed)
    n = m * (m - 1) // 2
    return lm.PairGeometry(np.arange(m), rng.uniform(0, 3, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n))


def test_shuffled_geometry_keeps_directions_and_permutes_latents():
    from helpers.lm.geometry import shuffled_geometry
    geo = _toy_geometry()
    null = shuffled_geometry(geo, seed=1)
    assert np.array_equal(null.decoder_cos, geo.decoder_cos) and np.array_equal(null.output_cos, geo.output_cos), \
        "the shuffled null must keep the SAE's own cosines"
    assert np.allclose(np.sort(null.lift), np.sort(geo.lift)), "the shuffled null must reuse the same lifts"
    assert not np.allclose(null.lift, geo.lift), "seed 1 should relabel the latents, the lifts stayed in place"


def test_random_geometry_is_untrained_and_keeps_lifts(model):
    from helpers.lm.geometry import random_geometry
    geo = _toy_geometry(m=40)
    null = random_geometry(model, geo, seed=0)
    assert np.array_equal(null.lift, geo.lift), "the random-direction null must keep the co-occurrence lifts"
    assert abs(null.decoder_cos.mean()) < 0.02 and np.abs(null.decoder_cos).max() < 0.3, \
        f"random unit directions in {model.cfg.d_mlp} dimensions should be nearly orthogonal, got cosines " \
        f"with mean {null.decoder_cos.mean():.3f}, largest {np.abs(null.decoder_cos).max():.3f}"


def test_latent_logits_with_the_decoder_bias_fails():
    def with_bias(sae, f, W_out, W_U):
        one_hot = torch.nn.functional.one_hot(torch.tensor([f]), sae.cfg.d_sae).float()[None]
        return sae.decode(one_hot)[0, 0] @ W_out @ W_U
    with pytest.raises(ExerciseError, match="decoder bias"):
        checks.latent_logits(with_bias)


# --- CE loss recovered against a baseline ----------------------------------------------------
@pytest.mark.parametrize("wrong, message", [
    (lambda clean, spliced, baseline: (baseline - spliced) / (clean - baseline), "wrong sign"),
    (lambda clean, spliced, baseline: (spliced - clean) / (baseline - clean), "leaves open"),
    (lambda clean, spliced, baseline: (baseline - spliced) / (spliced - clean), "whole gap"),
    (lambda clean, spliced, baseline: (5.0 - spliced) / (5.0 - clean), "does not change with the baseline"),
    (lambda clean, spliced, baseline: min(max((baseline - spliced) / (baseline - clean), 0.0), 1.0), "do not clip"),
    (lambda clean, spliced, baseline: 100 * (baseline - spliced) / (baseline - clean), "percentage"),
    (lambda clean, spliced, baseline: clean / spliced, "does not change with the baseline"),
], ids=["sign", "share-lost", "part-of-gap", "fixed-baseline", "clipped", "percent", "ratio"])
def test_ce_recovered_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.ce_recovered(wrong)


def test_ce_recovered_tensor_answer_passes():
    def as_tensor(clean, spliced, baseline):
        return (torch.tensor(baseline) - spliced) / (baseline - torch.tensor(clean))
    assert checks.ce_recovered(as_tensor) is as_tensor


# --- the per-token lookup baseline -------------------------------------------------------
def _sums_counts(acts, tokens, vocab):
    sums = torch.zeros(vocab, acts.shape[1]).index_add_(0, tokens, acts)
    counts = torch.zeros(vocab).index_add_(0, tokens, torch.ones(len(tokens)))
    return sums, counts


def _lookup(acts, tokens, vocab, unseen="overall", divide="count"):
    sums, counts = _sums_counts(acts, tokens, vocab)
    per = {"count": sums / counts.clamp_min(1)[:, None], "none": sums, "all": sums / len(tokens)}[divide]
    fill = {"overall": acts.mean(0), "zero": torch.zeros(acts.shape[1]),
            "mean-of-means": per[counts > 0].mean(0)}
    if unseen == "nan":
        return sums / counts[:, None]
    return torch.where(counts[:, None] > 0, per, fill[unseen])


def test_token_lookup_loop_passes():
    def loop(acts, tokens, vocab):
        table = acts.mean(0).repeat(vocab, 1)
        for t in tokens.unique():
            table[t] = acts[tokens == t].mean(0)
        return table
    assert checks.token_lookup_baseline(loop) is loop


@pytest.mark.parametrize("wrong, message", [
    (lambda acts, tokens, vocab: acts.mean(0).expand(vocab, -1), "mean-ablation"),
    (lambda acts, tokens, vocab: _lookup(acts, tokens, vocab, unseen="zero"), "left at zero"),
    (lambda acts, tokens, vocab: _lookup(acts, tokens, vocab, unseen="nan"), "NaN"),
    (lambda acts, tokens, vocab: _lookup(acts, tokens, vocab, unseen="mean-of-means"), "mean of the token means"),
    (lambda acts, tokens, vocab: _lookup(acts, tokens, vocab, divide="none"), "summed"),
    (lambda acts, tokens, vocab: _lookup(acts, tokens, vocab, divide="all"), "number of all rows"),
    (lambda acts, tokens, vocab: torch.stack([acts[tokens == t].mean(0) for t in tokens.unique()]), "one per vocabulary"),
], ids=["overall-mean", "unseen-zero", "unseen-nan", "mean-of-means", "sums", "divide-by-n", "seen-only"])
def test_token_lookup_mistakes_fail_with_their_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        checks.token_lookup_baseline(wrong)
