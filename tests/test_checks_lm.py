"""The checks of notebook 04's exercises: the likely wrong solutions fail with their own message,
and the CE-with-floors check (which needs a model, an SAE, tokens and training rows) passes a right
solution and its reference and falls back to the reference for a stub. The reference and stub
cases of the other checks are in tests/test_checks_common.py."""
import numpy as np
import pytest
import torch

from helpers import lm
from helpers.course.checks import lm as checks
from helpers.course.exercises import ExerciseError
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


# --- CE loss recovered with its floors -------------------------------------------------
@pytest.fixture(scope="module")
def floors_case(model):
    """Windows to judge, and training rows of hook_post (BOS left out) with their tokens."""
    windows = lm.corpus_token_windows(model, 2000, seq_len=16)
    train = torch.as_tensor(np.asarray(windows[4:60])).long()
    _, cache = model.run_with_cache(train, names_filter="blocks.0.mlp.hook_post")
    post = cache["blocks.0.mlp.hook_post"][:, 1:].reshape(-1, model.cfg.d_mlp)
    return windows[:4], post, train[:, 1:].reshape(-1)


def _floors(mistake=None):
    """A ce_with_floors learner, right, or with one plausible ``mistake``."""
    def fn(model, tokens, sae, train_acts, train_tokens, layer=0):
        point = {"pre": "mlp.hook_pre", "mlp_out": "hook_mlp_out"}.get(mistake, "mlp.hook_post")
        name, start = f"blocks.{layer}.{point}", 0 if mistake == "bos" else 1
        toks = torch.as_tensor(np.asarray(tokens)).long()
        vocab = model.cfg.d_vocab
        sums = torch.zeros(vocab, train_acts.shape[1]).index_add_(0, train_tokens, train_acts)
        counts = torch.zeros(vocab).index_add_(0, train_tokens, torch.ones(len(train_tokens)))
        fill = torch.zeros(train_acts.shape[1]) if mistake == "unseen_zero" else train_acts.mean(0)
        table = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], fill)
        mean = {"scalar_mean": train_acts.mean().expand(train_acts.shape[1]),
                "mean_of_means": table[counts > 0].mean(0)}.get(mistake, train_acts.mean(0))
        ids = torch.cat([toks[:, :1], toks[:, :-1]], 1) if mistake == "previous" else toks

        def reconstruct(x):
            rows = x.reshape(-1, x.shape[-1]).to(sae.device, torch.float32)
            x_hat = sae.decode(sae.encode(rows))[0]
            return (x_hat - sae.b_dec[0] if mistake == "no_bias" else x_hat).reshape(x.shape)

        new = {"sae": reconstruct, "zero": torch.zeros_like, "mean": lambda x: mean.expand(x.shape),
               "token lookup": lambda x: table[ids[:, start:]]}
        with torch.no_grad():
            losses = {"clean": float(model(toks, return_type="loss"))}
            for kind, make in new.items():
                def hook(acts, hook, make=make, kind=kind):
                    out = acts.clone()
                    out[:, start:] = make(acts[:, start:]).to(acts.device, acts.dtype)
                    if not (mistake == "no_return" and kind == "sae"):
                        return out
                losses[kind] = float(model.run_with_hooks(toks, return_type="loss", fwd_hooks=[(name, hook)]))
        c, s = losses["clean"], losses["sae"]
        rec = {f: (losses[f] - s) / (losses[f] - c) for f in ("zero", "mean", "token lookup")}
        if mistake == "sign":
            rec = {f: (losses[f] - s) / (c - losses[f]) for f in rec}
        elif mistake == "left_open":
            rec = {f: (s - c) / (losses[f] - c) for f in rec}
        elif mistake == "zero_for_all":
            rec = {f: rec["zero"] for f in rec}
        elif mistake == "percent":
            rec = {f: 100 * v for f, v in rec.items()}
        elif mistake == "clipped":
            rec = {f: min(max(v, 0.0), 1.0) for f, v in rec.items()}
        return losses, rec
    return fn


def test_ce_with_floors_right_solution_and_reference_pass(model, sae, floors_case, capsys):
    tokens, post, ttoks = floors_case
    right = _floors()
    assert checks.ce_with_floors(right, model, sae, tokens, post, ttoks) is right
    assert checks.ce_with_floors(checks.ce_with_floors_reference, model, sae, tokens, post, ttoks) \
        is checks.ce_with_floors_reference
    assert "✔" in capsys.readouterr().out


def test_ce_with_floors_stub_returns_reference(model, sae, floors_case, capsys):
    tokens, post, ttoks = floors_case
    assert checks.ce_with_floors(_stub, model, sae, tokens, post, ttoks) is checks.ce_with_floors_reference
    out = capsys.readouterr().out
    assert "The idea:" in out and "A second hint" in out


@pytest.mark.parametrize("mistake, message", [
    ("bos", "replaced position 0 too"), ("pre", "hook_pre, before the GELU"), ("mlp_out", "hook_mlp_out holds d_model"),
    ("no_bias", "leaves out the decoder bias"), ("previous", "previous token"), ("unseen_zero", "never seen"),
    ("scalar_mean", "one number"), ("mean_of_means", "mean of the per-token means"), ("no_return", "must return"),
    ("sign", "wrong sign"), ("left_open", "leaves open"), ("zero_for_all", "against the zero floor"),
    ("percent", "percentage"), ("clipped", "do not clip"),
])
def test_ce_with_floors_mistakes_fail_with_their_message(model, sae, floors_case, mistake, message):
    tokens, post, ttoks = floors_case
    with pytest.raises(ExerciseError, match=message):
        checks.ce_with_floors(_floors(mistake), model, sae, tokens, post, ttoks)


def test_ce_with_floors_reference_agrees_with_the_package(model, sae, floors_case):
    """The reference's SAE and zero losses are lm.ce_with_sae's (the package's splice and floor)."""
    tokens, post, ttoks = floors_case
    losses, _ = checks.ce_with_floors_reference(model, tokens, sae, post, ttoks)
    res = lm.ce_with_sae(model, tokens, sae)
    assert abs(losses["sae"] - res.with_sae) < 1e-4 and abs(losses["zero"] - res.zero_ablated) < 1e-4


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
