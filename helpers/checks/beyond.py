"""Checks for notebook 05's exercises: the activations of the modern SAEs (TopK, BatchTopK), the
straight-through gradient of JumpReLU's threshold, and the MCC recovery score.

The references are the course's own code: ``TopKSAE.activation``, ``BatchTopKSAE.activation``
(training mode), ``JumpReLUFunction.backward`` (through autograd) in ``helpers.sae.variants``, and
``helpers.beyond.scores.mcc``. Each check runs the reader's function on small cases, compares
values and, where the function is trained through, gradients, and returns the function the
notebook goes on with (see ``helpers.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import torch

from helpers.exercises import check, expect
# The package's own functions are the references (TopKSAE and BatchTopKSAE call the activations).
from helpers.beyond.scores import mcc as mcc_reference
from helpers.sae.variants import JumpReLUFunction
from helpers.sae.variants import batchtopk_activation as batchtopk_activation_reference
from helpers.sae.variants import topk_activation as topk_activation_reference

__all__ = ["topk_activation", "topk_activation_reference", "batchtopk_activation", "batchtopk_activation_reference",
           "jumprelu_threshold_grad", "jumprelu_threshold_grad_reference", "jumprelu_backward_reference",
           "mcc", "mcc_reference"]


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def jumprelu_backward_reference(x: torch.Tensor, theta: torch.Tensor, bandwidth: float,
                                grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward of JumpReLU c = x [x > theta] for x (batch, J), theta (J,), grad_out (batch, J):
    (grad_x (batch, J), grad_theta (J,)), read through autograd off the course's
    ``helpers.sae.variants.JumpReLUFunction``.

    grad_x = grad_out [x > theta] (the step passes no gradient to x); grad_theta is the
    straight-through estimator of Rajamanoharan et al. 2024, the sum over the batch of
    -(theta / bandwidth) 1[|x - theta| < bandwidth / 2] grad_out.
    """
    x, theta = x.detach().clone().requires_grad_(), theta.detach().clone().requires_grad_()
    with torch.enable_grad():
        out = JumpReLUFunction.apply(x, theta, float(bandwidth))
        grad_x, grad_theta = torch.autograd.grad(out, (x, theta), grad_out)
    return grad_x, grad_theta


jumprelu_threshold_grad_reference = jumprelu_backward_reference


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------
def _close(a, b, tol=1e-5) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.detach().float(), b.detach().float(), rtol=tol, atol=tol)))


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _expect_activation_gradient(got: torch.Tensor, want: torch.Tensor, pre: torch.Tensor, what: str) -> None:
    """Right values: the gradient with respect to ``pre`` must also be the reference's (1 on the
    kept, positive entries, 0 elsewhere), or the SAE trains on something else."""
    expect(got.requires_grad and got.grad_fn is not None,
           f"your {what} has the right values but no gradient: build it from pre with torch operations (gather or "
           "scatter the kept values, or multiply pre by a mask); a tensor made from numbers (torch.tensor(...), "
           ".tolist(), .item()) or under torch.no_grad() cuts the encoder off from the loss")
    g = torch.Generator().manual_seed(5)
    grad_out = torch.randn(pre.shape, generator=g)
    (mine,) = torch.autograd.grad(got, pre, grad_out, allow_unused=True, retain_graph=True)
    (ref,) = torch.autograd.grad(want, pre, grad_out, retain_graph=True)
    expect(mine is not None, f"your {what} has the right values but does not depend on pre in the graph: "
                             "keep the kept values connected to pre (a mask made with .detach() is fine, the values "
                             "themselves must not be detached)")
    leak = (mine != 0) & (ref == 0)
    expect(not bool(leak.any()),
           f"your {what} has the right values but passes gradient to {int(leak.sum())} pre-activations it zeroed: "
           "only the kept, positive entries may get gradient (multiply by the mask, do not add a detached correction)")
    expect(torch.allclose(mine, ref, atol=1e-6),
           f"your {what} has the right values but the wrong gradient with respect to pre: the kept entries must pass "
           "their gradient through unchanged (the values themselves must not be detached or rescaled)")


def _pre_case(seed: int = 0) -> torch.Tensor:
    """pre (2, 6, 10): instance 0 mostly positive with busy and quiet examples; instance 1 mostly
    negative (fewer than k positive in several examples); large negative values, so that ranking
    by |pre| picks other entries; no ties."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(2, 6, 10, generator=g)
    busy = torch.tensor([3.0, 0.3, 1.0, 2.0, 0.2, 1.5])[:, None]             # examples differ in size
    pre[0] = pre[0].abs() * busy - 0.2
    pre[1] = pre[1] * 2.0 - 2.5                                              # mostly negative, some large |pre|
    return pre


def _activation_differs(fn: Callable, pre: torch.Tensor, k, reference: Callable, label: str):
    """The learner's activation of ``pre``, or None when its values and gradient are the reference's."""
    got = fn(pre, k)
    expect(isinstance(got, torch.Tensor) and got.shape == pre.shape,
           f"return the activations in the shape of pre, (inst, batch, J) {tuple(pre.shape)}; got {_shape(got)}")
    want = reference(pre, k)
    if _close(got, want):
        _expect_activation_gradient(got, want, pre, label)
        return None
    return got


# --------------------------------------------------------------------------------------
# TopK
# --------------------------------------------------------------------------------------
def topk_activation(learner: Callable) -> Callable:
    """Check ``topk_activation(pre, k) -> acts`` (values and gradient) against ``TopKSAE.activation``."""

    def test(fn):
        k = 3
        pre = _pre_case().requires_grad_()
        got = _activation_differs(fn, pre, k, topk_activation_reference, "TopK activation")
        if got is None:
            return
        p = pre.detach()
        ref = topk_activation_reference
        # top-k along the batch axis: the k largest of each latent over the examples
        over_batch = ref(p.transpose(1, 2), k).transpose(1, 2)
        expect(not _close(got, over_batch) and not _close(got, over_batch.relu()),
               "you kept the k largest of each latent over the batch: TopK keeps the k largest latents of each "
               "example, so take the top k along the last axis (the latents)")
        values, idx = p.topk(k, dim=-1, largest=False)
        smallest = torch.zeros_like(p).scatter(-1, idx, values.relu())
        expect(not _close(got, smallest) and not _close(got, torch.zeros_like(p).scatter(-1, idx, values)),
               "you kept the k smallest pre-activations: keep the k largest (topk's default, largest=True)")
        idx = p.abs().topk(k, dim=-1).indices
        kept = p.gather(-1, idx)
        by_size = torch.zeros_like(p).scatter(-1, idx, kept.relu())
        expect(not _close(got, by_size) and not _close(got, torch.zeros_like(p).scatter(-1, idx, kept))
               and not _close(got, torch.zeros_like(p).scatter(-1, idx, kept.abs())),
               "you ranked the pre-activations by their absolute value: a large negative pre-activation is not a "
               "strong one; rank by the signed value and keep the k largest")
        values, idx = p.topk(k, dim=-1)
        expect(not _close(got, torch.zeros_like(p).scatter(-1, idx, values)),
               "negative values survive: when fewer than k of an example's pre-activations are positive, the top k "
               "still holds negatives; apply the ReLU to the kept values (in the second instance most are negative)")
        expect(not _close(got, torch.zeros_like(p).scatter(-1, idx, torch.ones_like(values))),
               "you returned a 0/1 mask of the kept latents: multiply it by the (ReLU'd) pre-activations")
        expect(not _close(got, p.relu()), "all positive pre-activations survive: keep only the k largest of each example")
        n_on = (got.detach() != 0).sum(-1)
        expect(bool((n_on <= k).all()), f"some examples keep more than k = {k} latents (up to {int(n_on.max())}): "
                                        "keep exactly the k largest of each example, zero the rest")
        expect(False, "the activations differ from the reference: for each example keep its k largest "
                      "pre-activations, ReLU them and put them back at their own positions (zeros elsewhere)")

    return check("topk_activation", learner, topk_activation_reference, test,
                 hint="TopK keeps, for every example separately, its k largest pre-activations and zeroes the rest; "
                      "the kept ones still pass through a ReLU, because when fewer than k are positive the top k "
                      "holds negatives. The kept entries must keep their gradient: the encoder trains through them",
                 how="find the k largest entries along the latent axis (the last one) and where they sit; make a "
                     "tensor of zeros shaped like the pre-activations and write the kept values, after a ReLU, back "
                     "at those positions (a scatter along the last axis does it). Do not rank by absolute value, and "
                     "do not rebuild the result from plain numbers: it must stay connected to the pre-activations")


# --------------------------------------------------------------------------------------
# BatchTopK
# --------------------------------------------------------------------------------------
def batchtopk_activation(learner: Callable) -> Callable:
    """Check ``batchtopk_activation(pre, k) -> acts`` (values and gradient) against
    ``BatchTopKSAE.activation`` in training mode."""

    def test(fn):
        k = 2
        pre = _pre_case(1).requires_grad_()
        I, B, J = pre.shape
        got = _activation_differs(fn, pre, k, batchtopk_activation_reference, "BatchTopK activation")
        if got is None:
            return
        p = pre.detach()
        expect(not _close(got, topk_activation_reference(p, k)),
               "you kept k latents per example: that is TopK. BatchTopK pools each instance's whole batch and keeps "
               "its k x batch largest activations, so busy examples get more than k latents and quiet ones fewer")
        flat = p.relu().reshape(I, B * J)
        values, idx = flat.topk(k, dim=-1)
        only_k = torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J)
        expect(not _close(got, only_k),
               f"you kept k = {k} activations for the whole batch: keep k x batch = {k * B} per instance, so that "
               "on average each example keeps k")
        pooled = p.relu().reshape(-1)
        for n in (k * B * I, k * B):
            values, idx = pooled.topk(n)
            expect(not _close(got, torch.zeros_like(pooled).scatter(-1, idx, values).reshape(I, B, J)),
                   "you pooled the instances together: each instance is its own SAE, so flatten only the batch and "
                   "latent axes (keep the instance axis first) and keep k x batch per instance")
        values, idx = p.reshape(I, B * J).topk(k * B, dim=-1)
        expect(not _close(got, torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J)),
               "negative values survive: in the second instance fewer than k x batch activations are positive; "
               "apply the ReLU (before or after choosing the largest)")
        expect(not _close(got, p.relu()), "all positive pre-activations survive: keep only the k x batch largest "
                                          "of each instance")
        n_on = (got.detach() != 0).reshape(I, -1).sum(-1)
        expect(bool((n_on <= k * B).all()), f"an instance keeps {int(n_on.max())} activations, more than k x batch "
                                            f"= {k * B}")
        expect(False, "the activations differ from the reference: per instance, flatten (batch, J) into one row, "
                      "keep its k x batch largest ReLU'd values, zero the rest and reshape back")

    return check("batchtopk_activation", learner, batchtopk_activation_reference, test,
                 hint="BatchTopK shares one budget among the examples of a batch: per instance it keeps the k times "
                      "batch largest ReLU'd activations of the whole batch, wherever they sit, so on average an "
                      "example keeps k latents but a busy one may keep more",
                 how="apply the ReLU; for each instance lay the batch and latent axes out as one long row (the "
                     "instance axis stays separate); find the k times batch largest entries of each row, write them "
                     "back into zeros at their positions, and fold the row back into the batch and latent axes. Keep "
                     "it differentiable: the kept entries pass their gradient on")


# --------------------------------------------------------------------------------------
# JumpReLU's threshold gradient
# --------------------------------------------------------------------------------------
def _jump_case():
    """x (8, 5) with entries inside the kernel window (|x - theta| < eps/2), in its outer half
    (eps/2 <= |x - theta| < eps), and far away; thresholds that differ per latent; grad_out."""
    g = torch.Generator().manual_seed(3)
    theta = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.5])
    eps = 0.4
    offsets = torch.tensor([-0.15, 0.12, -0.05, 0.3, -0.35, 0.9, -1.2, 0.07])[:, None]   # (8, 1)
    x = theta + offsets + 0.01 * torch.randn(8, 5, generator=g)
    grad_out = torch.randn(8, 5, generator=g)
    return x, theta, eps, grad_out


def jumprelu_threshold_grad(learner: Callable) -> Callable:
    """Check ``jumprelu_backward(x, theta, bandwidth, grad_out) -> (grad_x, grad_theta)`` against
    the course's ``JumpReLUFunction`` backward."""

    def test(fn):
        x, theta, eps, grad_out = _jump_case()
        out = fn(x.clone(), theta.clone(), eps, grad_out.clone())
        expect(isinstance(out, (tuple, list)) and len(out) == 2,
               f"return two tensors, (grad_x, grad_theta); got {type(out).__name__}")
        gx, gt = out
        want_x, want_t = jumprelu_backward_reference(x, theta, eps, grad_out)
        expect(isinstance(gx, torch.Tensor) and gx.shape == x.shape,
               f"grad_x must have the shape of x, {tuple(x.shape)}; got {_shape(gx)}")
        expect(isinstance(gt, torch.Tensor), f"grad_theta must be a tensor; got {type(gt).__name__}")
        if gt.shape == x.shape:
            expect(False, f"grad_theta has the shape of x {tuple(x.shape)}: theta is one number per latent, shared by "
                          f"every example, so sum the per-example terms over the batch to shape {tuple(theta.shape)}")
        expect(gt.shape == theta.shape, f"grad_theta must have the shape of theta, {tuple(theta.shape)}; got {_shape(gt)}")
        gx, gt = gx.detach().float(), gt.detach().float()
        # grad_x
        expect(not torch.allclose(gx, grad_out),
               "grad_x passes the gradient everywhere: the output is 0 where x <= theta, so there grad_x must be 0 "
               "(multiply grad_out by the mask x > theta)")
        expect(not torch.allclose(gx, grad_out * x),
               "grad_x is grad_out times x: the derivative of x [x > theta] with respect to x is the mask [x > theta] "
               "(the jump itself is left to theta's estimator)")
        expect(torch.allclose(gx, want_x, atol=1e-6),
               "grad_x is wrong: it is grad_out where x > theta and 0 elsewhere")
        # grad_theta
        if torch.allclose(gt, want_t, atol=1e-5):
            return
        inside = ((x - theta).abs() < eps / 2).float()
        expect(not torch.allclose(gt, -want_t, atol=1e-5),
               "grad_theta has the wrong sign: raising the threshold switches latents off and lowers the output, "
               "so the estimator is minus theta over the bandwidth")
        expect(not torch.allclose(gt, -(1 / eps) * (inside * grad_out).sum(0), atol=1e-5),
               "grad_theta lacks the factor theta: -1/bandwidth is the estimator of the step [x > theta] alone (the "
               "L0 penalty's); the output x [x > theta] jumps by theta there, so the factor is -theta/bandwidth")
        wide = ((x - theta).abs() < eps).float()
        expect(not torch.allclose(gt, (-(theta / eps) * wide * grad_out).sum(0), atol=1e-5),
               "your window is twice too wide: the rectangle kernel has width bandwidth, centred on theta, so it "
               "counts the examples with |x - theta| < bandwidth / 2")
        expect(not torch.allclose(gt, (-(x / eps) * inside * grad_out).sum(0), atol=1e-5),
               "use theta, not x, in the factor -theta/bandwidth")
        expect(not torch.allclose(gt, want_t / x.shape[0], atol=1e-5),
               "you averaged over the batch: sum the examples' contributions (the loss's own averaging is already "
               "in grad_out)")
        expect(not torch.allclose(gt, (-(theta / eps) * grad_out).sum(0), atol=1e-5),
               "every example contributes to grad_theta: only those within the kernel window, |x - theta| < "
               "bandwidth / 2, may")
        expect(not torch.allclose(gt, (-(theta / eps) * inside).sum(0), atol=1e-5),
               "multiply by grad_out: the estimator is the derivative of the output, chained with the gradient "
               "that arrives from above")
        expect(False, "grad_theta differs from the sum over the batch of -(theta / bandwidth) "
                      "x 1[|x - theta| < bandwidth / 2] x grad_out")

    return check("jumprelu_backward", learner, jumprelu_backward_reference, test,
                 hint="the output x times the step x > theta has an ordinary derivative in x (the mask) but none in "
                      "theta; the straight-through estimator pretends the jump is spread over a window of width "
                      "bandwidth around theta, where the output falls by theta over the bandwidth; theta is shared "
                      "by the batch, so its gradient adds up the examples",
                 how="grad_x is the incoming gradient where x exceeds theta and zero elsewhere. For grad_theta, mark "
                     "the examples whose distance from theta is less than half the bandwidth, give each marked entry "
                     "minus theta over the bandwidth times its incoming gradient, and add these up over the batch, "
                     "one number per latent")


# --------------------------------------------------------------------------------------
# MCC
# --------------------------------------------------------------------------------------
def _mcc_case(G: int, J: int, seed: int = 0):
    """truth (G, h) unit rows; learned (J, h): noisy, rescaled copies of most true features, some
    sign-flipped, the first one duplicated, the last one missing, the rest random."""
    g = torch.Generator().manual_seed(seed)
    h = 16
    truth = torch.nn.functional.normalize(torch.randn(G, h, generator=g), dim=-1)
    m = min(G, J) - 2                                                        # true features the SAE found
    sign = torch.tensor([(-1.0) ** i for i in range(m)])[:, None]           # every other one points backwards
    scale = torch.linspace(0.5, 3.0, m)[:, None]
    found = sign * scale * (truth[:m] + 0.3 * torch.randn(m, h, generator=g))
    dup = truth[0] + 0.5 * torch.randn(1, h, generator=g)                    # a second, worse copy of feature 0
    rest = torch.randn(J - m - 1, h, generator=g)
    learned = torch.cat([found, dup, rest])[torch.randperm(J, generator=g)]
    return learned, 0.7 * truth


def matching_parts(learned: torch.Tensor, truth: torch.Tensor):
    """What the likely mistakes of a Hungarian-matching exercise start from: the cosine matrix (rows of
    ``truth`` x rows of ``learned``), the matching on |cosine| (r, c) and on the signed cosine (rs, cs), and
    the mean |cosine| when either set of rows (or both) is left unnormalised (each matched two ways)."""
    from scipy.optimize import linear_sum_assignment

    L = torch.nn.functional.normalize(learned, dim=-1)
    T = torch.nn.functional.normalize(truth, dim=-1)
    cos = (T @ L.T).double().numpy()
    r, c = linear_sum_assignment(abs(cos), maximize=True)
    rs, cs = linear_sum_assignment(cos, maximize=True)
    unnormalised = [float(abs(m[x, y]).mean())
                    for m in ((truth @ learned.T).double().numpy(), (truth @ L.T).double().numpy(), (T @ learned.T).double().numpy())
                    for x, y in (linear_sum_assignment(abs(m), maximize=True), (r, c))]
    return cos, (r, c), (rs, cs), unnormalised


def _wrong_mccs(learned: torch.Tensor, truth: torch.Tensor) -> list[tuple[float, str]]:
    """What the likely mistakes compute on this case, with their messages."""
    cos, (r, c), (rs, cs), unnormalised = matching_parts(learned, truth)        # cos: (G, J)
    G, J = cos.shape
    return [
        (float(abs(cos).max(1).mean()), "that is MMCS (each true feature's best latent, latents may be reused): MCC "
                                        "matches one to one, each latent to at most one feature (Hungarian matching, "
                                        "scipy.optimize.linear_sum_assignment with maximize=True)"),
        (float(abs(cos).max(0).mean()), "you took each latent's best true feature, reusing features: MCC matches one "
                                        "to one (Hungarian matching on the |cosine| matrix)"),
        (float(cos[rs, cs].mean()), "you matched on the signed cosine: MCC uses |cosine|, so a latent pointing "
                                    "against its feature counts as found (take the absolute value before matching)"),
        (float(abs(cos[rs, cs]).mean()), "you matched on the signed cosine and took |cosine| only afterwards: take "
                                         "the absolute value before the matching, so the matching itself maximises "
                                         "|cosine|"),
        (float(abs(cos[r, c]).sum() / max(G, J)), "you averaged over the larger set: MCC averages over the min(G, J) "
                                                  "matched pairs (the one-to-one mean cosine counts the unmatched as 0; "
                                                  "MCC does not)"),
    ] + [(v, "normalise both sets of rows to unit length first: a cosine ignores length") for v in unnormalised]


def mcc(learner: Callable) -> Callable:
    """Check ``mcc(learned, truth) -> float`` against ``helpers.beyond.scores.mcc``."""

    def test(fn):
        for G, J in ((6, 9), (9, 6)):
            learned, truth = _mcc_case(G, J)
            got = fn(learned.clone(), truth.clone())
            try:
                got = float(got)
            except (TypeError, ValueError, RuntimeError):
                expect(False, f"return one number (a float or a one-element tensor); got {type(got).__name__} "
                              f"{_shape(got)}")
            want = mcc_reference(learned, truth)
            if abs(got - want) < 1e-5:
                continue
            for wrong, message in _wrong_mccs(learned, truth):
                expect(abs(got - wrong) > 1e-6, message)
            expect(False, f"MCC of this case is {want:.4f}, you got {got:.4f} (with {G} true features and {J} "
                          "latents): normalise the rows, take |cosine| for every (feature, latent) pair, find the "
                          "one-to-one matching with the largest total, average its min(G, J) values")

    return check("mcc", learner, mcc_reference, test,
                 hint="MCC pairs latents with true features one to one, each used at most once, choosing the pairing "
                      "with the largest total absolute cosine; its score is the mean absolute cosine of the pairs, "
                      "which are as many as the smaller of the two sets",
                 how="normalise both sets of rows to unit length, form the matrix of absolute cosines between every "
                     "true feature and every latent, give it to the Hungarian algorithm (SciPy's linear sum "
                     "assignment, maximising) and average the matched entries")
