"""Checks for notebook 05's exercises: the activations of the modern SAEs (TopK, BatchTopK), the
straight-through gradient of JumpReLU's threshold, and the MCC recovery score (checked in
``helpers.course.checks.matching`` beside notebook 06's cross-seed consistency, and re-exported here).

The references are the course's own code: ``TopKSAE.activation``, ``BatchTopKSAE.activation``
(training mode) and ``JumpReLUFunction.backward`` (through autograd) in ``helpers.sae.variants``.
Each check runs the reader's function on small cases, compares values and, where the function is
trained through, gradients, and returns the function the notebook goes on with (see
``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import torch

from helpers.course.checks.common import reject, same, shape_of
from helpers.course.checks.matching import mcc, mcc_reference  # notebook 05 finds all its checks here
from helpers.course.exercises import check, expect
# The package's own functions are the references (TopKSAE and BatchTopKSAE call the activations).
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


def _expect_activation(fn: Callable, pre: torch.Tensor, k: int, reference: Callable, label: str,
                       mistakes: Callable[[torch.Tensor], list], too_many: Callable[[torch.Tensor], str | None],
                       otherwise: str) -> None:
    """Run the reader's activation on ``pre``: it passes with the reference's values and gradient;
    otherwise it fails with the first of ``mistakes(pre)`` it matches, else with ``too_many(on)``
    where that names a breach of the budget (``on``: the mask of its non-zero entries), else with
    ``otherwise``."""
    got = fn(pre, k)
    expect(isinstance(got, torch.Tensor) and got.shape == pre.shape,
           f"return the activations in the shape of pre, (inst, batch, J) {tuple(pre.shape)}; got {shape_of(got)}")
    want = reference(pre, k)
    if same(got, want):
        _expect_activation_gradient(got, want, pre, label)
        return
    reject(got, mistakes(pre.detach()))
    breach = too_many(got.detach() != 0)
    expect(breach is None, breach)
    expect(False, otherwise)


# --------------------------------------------------------------------------------------
# TopK
# --------------------------------------------------------------------------------------
def topk_activation(learner: Callable) -> Callable:
    """Check ``topk_activation(pre, k) -> acts`` (values and gradient) against ``TopKSAE.activation``."""

    def mistakes(p: torch.Tensor, k: int = 3) -> list:
        put = lambda idx, values: torch.zeros_like(p).scatter(-1, idx, values)  # noqa: E731  (zeros elsewhere)
        over_batch = topk_activation_reference(p.transpose(1, 2), k).transpose(1, 2)  # k largest of each latent
        small, small_idx = p.topk(k, dim=-1, largest=False)
        by_size_idx = p.abs().topk(k, dim=-1).indices
        by_size = p.gather(-1, by_size_idx)
        values, idx = p.topk(k, dim=-1)
        batch_axis = ("you kept the k largest of each latent over the batch: TopK keeps the k largest latents of each "
                      "example, so take the top k along the last axis (the latents)")
        smallest = "you kept the k smallest pre-activations: keep the k largest (topk's default, largest=True)"
        absolute = ("you ranked the pre-activations by their absolute value: a large negative pre-activation is not a "
                    "strong one; rank by the signed value and keep the k largest")
        return [(over_batch, batch_axis), (over_batch.relu(), batch_axis),
                (put(small_idx, small.relu()), smallest), (put(small_idx, small), smallest),
                (put(by_size_idx, by_size.relu()), absolute), (put(by_size_idx, by_size), absolute),
                (put(by_size_idx, by_size.abs()), absolute),
                (put(idx, values), "negative values survive: when fewer than k of an example's pre-activations are "
                 "positive, the top k still holds negatives; apply the ReLU to the kept values (in the second "
                 "instance most are negative)"),
                (put(idx, torch.ones_like(values)), "you returned a 0/1 mask of the kept latents: multiply it by the "
                 "(ReLU'd) pre-activations"),
                (p.relu(), "all positive pre-activations survive: keep only the k largest of each example")]

    def too_many(on: torch.Tensor, k: int = 3) -> str | None:
        n_on = on.sum(-1)
        return None if bool((n_on <= k).all()) else (
            f"some examples keep more than k = {k} latents (up to {int(n_on.max())}): keep exactly the k largest of "
            "each example, zero the rest")

    def test(fn):
        _expect_activation(fn, _pre_case().requires_grad_(), 3, topk_activation_reference, "TopK activation",
                           mistakes, too_many, "the activations differ from the reference: for each example keep "
                           "its k largest pre-activations, ReLU them and put them back at their own positions (zeros "
                           "elsewhere)")

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

    k, (I, B, J) = 2, _pre_case(1).shape

    def mistakes(p: torch.Tensor) -> list:
        flat = p.relu().reshape(I, B * J)
        values, idx = flat.topk(k, dim=-1)
        pooled = p.relu().reshape(-1)
        instances = ("you pooled the instances together: each instance is its own SAE, so flatten only the batch "
                     "and latent axes (keep the instance axis first) and keep k x batch per instance")
        out = [(topk_activation_reference(p, k), "you kept k latents per example: that is TopK. BatchTopK pools each "
                "instance's whole batch and keeps its k x batch largest activations, so busy examples get more than k "
                "latents and quiet ones fewer"),
               (torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J), f"you kept k = {k} activations for "
                f"the whole batch: keep k x batch = {k * B} per instance, so that on average each example keeps k")]
        for n in (k * B * I, k * B):
            values, idx = pooled.topk(n)
            out.append((torch.zeros_like(pooled).scatter(-1, idx, values).reshape(I, B, J), instances))
        values, idx = p.reshape(I, B * J).topk(k * B, dim=-1)
        return out + [(torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J), "negative values survive: in "
                       "the second instance fewer than k x batch activations are positive; apply the ReLU (before or "
                       "after choosing the largest)"),
                      (p.relu(), "all positive pre-activations survive: keep only the k x batch largest of each "
                                 "instance")]

    def too_many(on: torch.Tensor) -> str | None:
        n_on = on.reshape(I, -1).sum(-1)
        return None if bool((n_on <= k * B).all()) else (
            f"an instance keeps {int(n_on.max())} activations, more than k x batch = {k * B}")

    def test(fn):
        _expect_activation(fn, _pre_case(1).requires_grad_(), k, batchtopk_activation_reference,
                           "BatchTopK activation", mistakes, too_many, "the activations differ from the reference: "
                           "per instance, flatten (batch, J) into one row, keep its k x batch largest ReLU'd values, "
                           "zero the rest and reshape back")

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
               f"grad_x must have the shape of x, {tuple(x.shape)}; got {shape_of(gx)}")
        expect(isinstance(gt, torch.Tensor), f"grad_theta must be a tensor; got {type(gt).__name__}")
        if gt.shape == x.shape:
            expect(False, f"grad_theta has the shape of x {tuple(x.shape)}: theta is one number per latent, shared by "
                          f"every example, so sum the per-example terms over the batch to shape {tuple(theta.shape)}")
        expect(gt.shape == theta.shape, f"grad_theta must have the shape of theta, {tuple(theta.shape)}; got {shape_of(gt)}")
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
        inside = ((x - theta).abs() < eps / 2).float()                       # the kernel's window
        wide = ((x - theta).abs() < eps).float()
        reject(gt, [
            (-want_t, "grad_theta has the wrong sign: raising the threshold switches latents off and lowers the "
                      "output, so the estimator is minus theta over the bandwidth"),
            (-(1 / eps) * (inside * grad_out).sum(0), "grad_theta lacks the factor theta: -1/bandwidth is the "
             "estimator of the step [x > theta] alone (the L0 penalty's); the output x [x > theta] jumps by theta "
             "there, so the factor is -theta/bandwidth"),
            ((-(theta / eps) * wide * grad_out).sum(0), "your window is twice too wide: the rectangle kernel has width "
             "bandwidth, centred on theta, so it counts the examples with |x - theta| < bandwidth / 2"),
            ((-(x / eps) * inside * grad_out).sum(0), "use theta, not x, in the factor -theta/bandwidth"),
            (want_t / x.shape[0], "you averaged over the batch: sum the examples' contributions (the loss's own "
                                  "averaging is already in grad_out)"),
            ((-(theta / eps) * grad_out).sum(0), "every example contributes to grad_theta: only those within the "
                                                 "kernel window, |x - theta| < bandwidth / 2, may"),
            ((-(theta / eps) * inside).sum(0), "multiply by grad_out: the estimator is the derivative of the output, "
                                               "chained with the gradient that arrives from above")],
            otherwise="grad_theta differs from the sum over the batch of -(theta / bandwidth) x 1[|x - theta| < "
                      "bandwidth / 2] x grad_out")

    return check("jumprelu_backward", learner, jumprelu_backward_reference, test,
                 hint="the output x times the step x > theta has an ordinary derivative in x (the mask) but none in "
                      "theta; the straight-through estimator pretends the jump is spread over a window of width "
                      "bandwidth around theta, where the output falls by theta over the bandwidth; theta is shared "
                      "by the batch, so its gradient adds up the examples",
                 how="grad_x is the incoming gradient where x exceeds theta and zero elsewhere. For grad_theta, mark "
                     "the examples whose distance from theta is less than half the bandwidth, give each marked entry "
                     "minus theta over the bandwidth times its incoming gradient, and add these up over the batch, "
                     "one number per latent")
