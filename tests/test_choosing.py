"""Notebook 06's helpers (helpers.beyond.choosing): BatchTopK with its own k per instance and its
Matryoshka loss, the nth decoder projection of "Sparse but Wrong", the elbow rule, the cached
training of such stacks, and ``synthetic_eval`` against SAELens' definitions computed by hand."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import helpers.beyond.training as training
from helpers.beyond.choosing import elbow, nth_decoder_projection, synthetic_eval
from helpers.beyond.matryoshka import PerInstanceBatchTopK, matryoshka_loss
from helpers.beyond.training import train_cached
from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.sae import SAE, SAEConfig
from helpers.sae.variants import TOPK_THRESHOLD_LR, batchtopk_activation


def _batchtopk_cfg(n_instances=3, d_in=8, d_sae=32, k=4, **kw):
    return SAEConfig(d_in=d_in, d_sae=d_sae, l1_coeffs=(0.0,) * n_instances, architecture="batchtopk", k=k, **kw)


# --- PerInstanceBatchTopK ----------------------------------------------------------------------------

def test_equal_ks_train_exactly_like_batchtopk():
    torch.manual_seed(0)
    sae = PerInstanceBatchTopK(_batchtopk_cfg(), ks=(4, 4, 4), device="cpu").train()
    pre = torch.randn(3, 16, 32, requires_grad=True)
    ref_pre = pre.detach().clone().requires_grad_(True)
    weights = torch.randn(3, 16, 32)                      # an arbitrary downstream loss
    ours, ref = sae.activation(pre), batchtopk_activation(ref_pre, 4)
    assert torch.equal(ours, ref), (f"with every k = 4 the training activations must be batchtopk_activation's; "
                                    f"{int((ours != ref).sum())} of {ref.numel()} entries differ")
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(pre.grad, ref_pre.grad), ("the gradient through the per-instance BatchTopK must be "
                                                     "batchtopk_activation's (through kept entries only)")


def test_each_instance_keeps_its_own_k_times_batch_latents():
    ks, B = (1, 3, 6), 16
    sae = PerInstanceBatchTopK(_batchtopk_cfg(k=6), ks=ks, device="cpu").train()
    pre = torch.rand(3, B, 32) + 0.01                     # every pre-activation positive and distinct
    kept = (sae.activation(pre) != 0).sum(dim=(1, 2))
    assert kept.tolist() == [k * B for k in ks], f"instance i must keep k_i x batch = {[k * B for k in ks]} latents, kept {kept.tolist()}"
    acts = sae.activation(pre)
    for i, k in enumerate(ks):                            # ... and they must be the largest of the batch
        smallest_kept = acts[i][acts[i] > 0].min()
        largest_dropped = pre[i][acts[i] == 0].max()
        assert smallest_kept > largest_dropped, f"instance {i} (k={k}) dropped a larger activation than it kept"


def test_training_moves_the_threshold_toward_the_smallest_kept_activation():
    sae = PerInstanceBatchTopK(_batchtopk_cfg(k=6), ks=(1, 3, 6), device="cpu").train()
    pre = torch.rand(3, 16, 32) + 0.01
    acts = sae.activation(pre)
    smallest = torch.stack([a[a > 0].min() for a in acts])
    assert torch.allclose(sae.topk_threshold, TOPK_THRESHOLD_LR * smallest), (
        f"from 0 one batch must move each instance's threshold by lr x its own smallest kept activation, "
        f"got {sae.topk_threshold.tolist()} for smallest kept {smallest.tolist()}")


def test_eval_mode_encodes_with_the_learned_threshold():
    sae = PerInstanceBatchTopK(_batchtopk_cfg(k=6), ks=(1, 3, 6), device="cpu")
    with torch.no_grad():
        sae.topk_threshold.copy_(torch.tensor([0.2, 0.5, 0.9]))
    pre = torch.randn(3, 16, 32)
    sae.eval()
    acts = sae.activation(pre)
    expected = pre.relu() * (pre > torch.tensor([0.2, 0.5, 0.9])[:, None, None])
    assert torch.equal(acts, expected), "in eval mode instance i must keep every activation above its own threshold"
    sae.train()
    assert not torch.equal(sae.activation(pre), acts), "training mode must use the batch top-k, not the threshold"


def test_bad_ks_and_prefixes_are_refused():
    cfg = _batchtopk_cfg(n_instances=2)
    with pytest.raises(ValueError, match="ks"):
        PerInstanceBatchTopK(cfg, ks=(1, 40), device="cpu")
    with pytest.raises(ValueError, match="ks"):
        PerInstanceBatchTopK(cfg, ks=(1,), device="cpu")
    for bad in ((0.5, 0.25), (0.25, 1.0), (0.0, 0.5), (0.25, 0.25)):
        with pytest.raises(ValueError, match="prefixes"):
            PerInstanceBatchTopK(cfg, ks=(2, 2), device="cpu", prefixes=bad)


# --- Matryoshka ------------------------------------------------------------------------------------------

def _naive_matryoshka(acts, D, b_dec, target, widths):
    """Each prefix rebuilt from scratch: b_dec + the first m latents, then (1/h) ||error||^2 over the batch."""
    total = torch.zeros(acts.shape[0], dtype=torch.float64)
    for i in range(acts.shape[0]):
        for m in widths:
            x_hat = b_dec[i].double() + acts[i, :, :m].double() @ D[i, :m].double()
            total[i] += ((x_hat - target.double()) ** 2).mean()
    return total


def test_matryoshka_loss_equals_rebuilding_each_prefix():
    torch.manual_seed(1)
    I, B, J, h = 2, 8, 16, 5
    acts, D = torch.rand(I, B, J), torch.nn.functional.normalize(torch.randn(I, J, h), dim=-1)
    b_dec, target = torch.randn(I, h), torch.randn(B, h)
    for widths in ([2, 4, 8], [3], [4, 16]):
        got = matryoshka_loss(acts, D, b_dec, target, widths).double()
        want = _naive_matryoshka(acts, D, b_dec, target, widths)
        assert torch.allclose(got, want, rtol=1e-5), f"widths {widths}: matryoshka_loss {got.tolist()} != naive {want.tolist()}"


def test_matryoshka_training_loss_is_batchtopk_loss_plus_the_prefix_terms():
    cfg = _batchtopk_cfg(n_instances=2, d_in=8, d_sae=16, k=3, decoder_bias=True)
    plain = PerInstanceBatchTopK(cfg, ks=(2, 3), device="cpu").train()
    nested = PerInstanceBatchTopK(cfg, ks=(2, 3), device="cpu", prefixes=(0.25, 0.5)).train()
    assert nested.widths == [4, 8], f"prefixes (1/4, 1/2) of 16 latents are widths [4, 8], got {nested.widths}"
    with torch.no_grad():                                 # a non-zero b_dec, the same in both
        plain.b_dec.normal_(generator=torch.Generator().manual_seed(0))
        nested.b_dec.copy_(plain.b_dec)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    base, out = plain(x), nested(x)
    terms = matryoshka_loss(base.acts, plain.decoder_directions(), plain.b_dec, x, [4, 8])
    assert terms.min() > 0, "the prefix terms of a random SAE cannot be zero (the test would prove nothing)"
    assert torch.allclose(out.loss, base.loss + terms.sum()), (
        f"Matryoshka loss {float(out.loss):.6f} != BatchTopK loss {float(base.loss):.6f} + prefix terms {terms.tolist()}")
    assert torch.allclose(out.l1_loss, base.l1_loss + terms), "the sparsity slot must carry each instance's prefix terms"
    assert torch.allclose(out.recon_loss, base.recon_loss), "the full-width reconstruction loss must not change"
    nested.eval()
    plain.eval()
    assert torch.allclose(nested(x).loss, plain(x).loss), "outside training the Matryoshka terms must be off"


# --- nth decoder projection --------------------------------------------------------------------------------

def test_nth_decoder_projection_is_the_sparse_but_wrong_formula():
    torch.manual_seed(3)
    I, B, J, h = 3, 20, 12, 6
    x = torch.randn(B, h)
    D = torch.nn.functional.normalize(torch.randn(I, J, h), dim=-1)
    b_dec = torch.randn(I, h)
    for n in (0, 1, 5, J - 1):
        got = nth_decoder_projection(x, D, b_dec, n)
        for i in range(I):
            proj = ((x - b_dec[i]) @ D[i].T).flatten()            # (B x J) projections on every decoder row
            want = proj.sort(descending=True).values[n * B]
            assert torch.isclose(got[i], want, atol=1e-6), f"n={n}, instance {i}: got {float(got[i])}, formula {float(want)}"
    with pytest.raises(ValueError, match="n must lie"):
        nth_decoder_projection(x, D, b_dec, J)


# --- elbow -----------------------------------------------------------------------------------------------

def test_elbow_finds_the_knee_of_a_piecewise_linear_curve():
    x = np.arange(1, 11, dtype=float)
    y = np.where(x <= 4, 10 - 3 * (x - 1), 1 - 0.1 * (x - 4))  # steep to x = 4 (index 3), then nearly flat
    assert elbow(x, y, log_x=False) == 3, f"the knee of this curve is at index 3, got {elbow(x, y, log_x=False)}"
    xs = 2.0 ** np.arange(10)                                  # the same shape in log x, knee at index 2
    ys = np.where(np.arange(10) <= 2, np.arange(10) * 1.0, 2 + 0.05 * (np.arange(10) - 2))
    assert elbow(xs, ys) == 2, f"on a log-x axis the knee is at index 2, got {elbow(xs, ys)}"
    assert elbow(xs, ys, log_x=False) != 2, "on a linear x axis the same points have another elbow (log_x must matter)"


@pytest.mark.parametrize("x, y", [([1, 2, 3], [1, 2]), ([1, 2], [1, 2]), ([1, 2, 3], [1, float("nan"), 3])])
def test_elbow_refuses_bad_input(x, y):
    with pytest.raises(ValueError, match="elbow needs"):
        elbow(x, y)


@pytest.mark.parametrize("x", [[0, 1, 2, 4], [-1, 1, 2, 4], [1, 2, float("nan"), 4]])
def test_elbow_refuses_x_it_cannot_take_the_log_of(x):
    with pytest.raises(ValueError):  # np.log gives -inf/NaN, and argmax of NaN distances silently says 0
        elbow(x, [4, 1, 0.5, 0])


# --- synthetic_eval against SAELens' definitions, computed by hand on the same samples -----------------------

EVAL_DATA = GroundTruthConfig(n_features=16, d=32, correlated=False, mean_active=2.0, seed=0)


def _hand_made_saes(data):
    """A perfect SAE: decoder = the truth (16 latents), encoder its pseudo-inverse (reads c back
    exactly). A messy one with 24 latents: the truth permuted, eight rows duplicating others
    (one of them noisy), a noisy encoder, and one latent that never fires."""
    F = data.features.float()
    perfect = SAE(SAEConfig(d_in=32, d_sae=16, l1_coeffs=(0.0,)), device="cpu")
    messy = SAE(SAEConfig(d_in=32, d_sae=24, l1_coeffs=(0.0,)), device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        perfect.W_dec[0], perfect.W_enc[0], perfect.b_enc[0] = F, torch.linalg.pinv(F), -1e-4
        rows = torch.cat([F[torch.randperm(16, generator=gen)], F[:8]])
        rows[16] += 0.3 * torch.randn(32, generator=gen)
        messy.W_dec[0] = rows
        messy.W_enc[0] = rows.T + 0.2 * torch.randn(32, 24, generator=gen)
        messy.b_enc[0] = 0.05 * torch.randn(24, generator=gen)
        messy.b_enc[0, 5] = -100.0                         # latent 5 never fires
    return perfect, messy


def _saelens_by_hand(sae, F, xs, cs):
    """Every SyntheticEval field per instance, by SAELens' definitions, in numpy (F: the true features)."""
    F = F.double().numpy()
    x = np.concatenate([t.numpy() for t in xs]).astype(np.float64)
    c = np.concatenate([t.numpy() for t in cs])
    with torch.no_grad():
        sae.eval()
        acts = torch.cat([sae.encode(t) for t in xs], dim=1)
        x_hat = sae.decode(acts).double().numpy()
        acts = acts.numpy()
    rows = []
    for i in range(acts.shape[0]):
        W = sae.W_dec[i].detach().double().numpy()
        cos = np.abs((W / np.linalg.norm(W, axis=1, keepdims=True)) @ (F / np.linalg.norm(F, axis=1, keepdims=True)).T)
        best = cos.argmax(1)                                 # (J,) best-matching true feature per latent
        r, col = linear_sum_assignment(1 - cos)
        on, truth = acts[i] != 0, c[:, best] > 0
        tp, fp = (on & truth).sum(0), (on & ~truth).sum(0)
        fn, tn = (~on & truth).sum(0), (~on & ~truth).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            rc = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f1 = np.where(p + rc > 0, 2 * p * rc / (p + rc), 0.0)
        norms = np.linalg.norm(x, axis=1)
        keep = norms > 1e-6
        var = (x ** 2).sum(1).mean() - (x.mean(0) ** 2).sum()
        rows.append(dict(
            true_l0=(c != 0).sum(1).mean(), sae_l0=on.sum(1).mean(), dead_latents=int((~on.any(0)).sum()),
            shrinkage=(np.linalg.norm(x_hat[i][keep], axis=1) / norms[keep]).mean(),
            explained_variance=1 - ((x - x_hat[i]) ** 2).sum(1).mean() / var,
            mcc=cos[r, col].mean(), uniqueness=len(np.unique(best)) / len(best),
            precision=p.mean(), recall=rc.mean(), f1=f1.mean(), accuracy=((tp + tn) / on.shape[0]).mean()))
    return rows


def test_synthetic_eval_matches_saelens_definitions_on_the_same_samples():
    data = GroundTruthData(EVAL_DATA, device="cpu")
    saes = _hand_made_saes(data)
    n, chunk = 4096, 1024
    with data.fixed_stream("test-synthetic-eval"):
        (perfect,) = synthetic_eval(saes[0], data, n=n, chunk=chunk)
    with data.fixed_stream("test-synthetic-eval"):
        (messy,) = synthetic_eval(saes[1], data, n=n, chunk=chunk)
    with data.fixed_stream("test-synthetic-eval"):          # the same samples, drawn in the same chunks
        xs, cs = zip(*(data.sample_with_coefficients(chunk) for _ in range(n // chunk)))
    empty = float((torch.cat(xs).norm(dim=-1) <= 1e-6).float().mean())
    assert empty > 0.05, f"the data should hold empty samples ({empty:.1%}) so that shrinkage's treatment of them matters"

    assert perfect.mcc > 1 - 1e-6 and perfect.uniqueness == 1, (
        f"the truth as decoder must give MCC 1 and uniqueness 1, got {perfect.mcc}, {perfect.uniqueness}")
    assert min(perfect.precision, perfect.recall, perfect.f1) > 0.999, (
        f"an encoder that reads the coefficients back fires exactly with its feature: got {perfect}")
    assert abs(perfect.shrinkage - 1) < 1e-3, (
        f"exact codes do not shrink: shrinkage must be 1 over the non-empty samples (SAELens skips ||x|| = 0), "
        f"got {perfect.shrinkage:.4f}")
    assert messy.dead_latents >= 1 and messy.uniqueness < 1, "the messy SAE must have a dead latent and duplicates"

    for label, sae, got in (("perfect", saes[0], perfect), ("messy", saes[1], messy)):
        (want,) = _saelens_by_hand(sae, data.features, xs, cs)
        for name in got._fields:
            assert math.isclose(getattr(got, name), want[name], rel_tol=1e-5, abs_tol=1e-5), (
                f"{label} SAE: {name} = {getattr(got, name):.6f}, but SAELens' definition on the same samples "
                f"gives {want[name]:.6f}")


def test_synthetic_eval_does_not_depend_on_the_chunk_size():
    data = GroundTruthData(EVAL_DATA, device="cpu")
    sae = _hand_made_saes(data)[1]
    with data.fixed_stream("chunks"):
        x, c = data.sample_with_coefficients(2048)

    class Replay:                                            # serves one fixed sample set in any chunking
        cfg, features = data.cfg, data.features

        def __init__(self):
            self.at = 0

        def sample_with_coefficients(self, m):
            self.at += m
            return x[self.at - m:self.at], c[self.at - m:self.at]

    whole, pieces = synthetic_eval(sae, Replay(), n=2048, chunk=2048), synthetic_eval(sae, Replay(), n=2048, chunk=300)
    for a, b in zip(whole, pieces):
        for name in a._fields:
            assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=1e-5, abs_tol=1e-6), (
                f"{name} changed with the chunk size: {getattr(a, name)} vs {getattr(b, name)}")


# --- cached training ------------------------------------------------------------------------------------------

def test_train_cached_trains_a_matryoshka_stack_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16, seed=0), device="cpu")
    cfg = _batchtopk_cfg(n_instances=2, d_in=16, d_sae=32, k=4, steps=30, log_every=10)
    first = train_cached(cfg, data, "matryoshka-test", [2, 4], cls=PerInstanceBatchTopK, prefixes=(0.25, 0.5))
    assert isinstance(first.sae, PerInstanceBatchTopK) and first.sae.widths == [8, 16], "the options must reach the class"
    assert (first.sae.topk_threshold > 0).all(), "training must have learned a threshold per instance"
    files = list((tmp_path / "beyond").glob("matryoshka-test-*/entry.json"))
    assert len(files) == 1, f"one cache entry expected, found {files}"

    def no_training(*args, **kwargs):
        raise AssertionError("the second call trained again instead of loading the cache")

    monkeypatch.setattr(training, "train_sae", no_training)
    again = train_cached(cfg, data, "matryoshka-test", [2, 4], cls=PerInstanceBatchTopK, prefixes=(0.25, 0.5))
    for name, tensor in first.sae.state_dict().items():
        assert torch.equal(tensor, again.sae.state_dict()[name]), f"{name} differs after loading from the cache"
    assert again.sae.ks.tolist() == [2, 4] and again.sae.widths == [8, 16]
    with pytest.raises(AssertionError, match="trained again"):   # other prefixes: another SAE, not this cache
        train_cached(cfg, data, "matryoshka-test", [2, 4], cls=PerInstanceBatchTopK, prefixes=(0.5,))


def test_train_cached_refuses_a_class_or_options_without_ks(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    data = GroundTruthData(GroundTruthConfig(n_features=32, d=16, seed=0), device="cpu")
    cfg = _batchtopk_cfg(n_instances=2, d_in=16, d_sae=32, k=4, steps=5)
    with pytest.raises(ValueError, match="give ks"):
        train_cached(cfg, data, "no-ks", cls=PerInstanceBatchTopK)
    with pytest.raises(ValueError, match="give ks"):
        train_cached(cfg, data, "no-ks", prefixes=(0.5,))
    assert not list(tmp_path.rglob("*.npz")), "a refused call must not train or write a cache"
