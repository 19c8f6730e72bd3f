"""Checks for notebook 02's exercises: which features the report's generator switches on, the
SAE's forward pass and loss, and the mean max cosine similarity (MMCS).

Each check runs the reader's function on small cases whose answers are known (or computed by
the reference) and returns the function the notebook goes on with (see
``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import torch

from helpers.course.checks.common import shape_of
from helpers.course.exercises import check, expect
from helpers.metrics import mmcs as mmcs_reference  # the course's MMCS is the exercise's reference
from helpers.sae import SAE, SAEConfig


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def active_features_reference(z: torch.Tensor, u: torch.Tensor, decay: float, mean_active: float) -> torch.Tensor:
    """Which features are on, (n, G) bool, from correlated Gaussians ``z`` and uniforms ``u``.

    Feature g is on when u_g < s * decay**g * Phi(z_g): Phi (the normal CDF) turns z into a
    number in (0, 1) that keeps z's correlations, decay**g makes low indices common, and s is
    chosen so that on average ``mean_active`` features are on (E[Phi(z)] = 1/2). (``GroundTruthData``
    draws this inside its sampler and has no function of its own for it.)
    """
    G = z.shape[-1]
    profile = decay ** torch.arange(G, dtype=z.dtype, device=z.device)  # (G,)
    scale = mean_active / (0.5 * profile.sum())  # makes E[number on] = mean_active
    return u < scale * profile * torch.special.ndtr(z)


def sae_forward_reference(sae: SAE, x: torch.Tensor, target: torch.Tensor):
    """The report's SAE for every instance of a stack, (x_hat, c, recon, l1): the course's
    ``SAE.forward`` (called on the class, so that a subclass whose ``forward`` calls this
    function does not recurse). x, target: (B, h); x_hat (I, B, h), c (I, B, J), recon and l1 (I,)."""
    out = SAE.forward(sae, x, target)
    return out.x_hat, out.acts, out.recon_loss, out.l1_loss


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def active_features(learner: Callable) -> Callable:
    """Check ``active_features(z, u, decay, mean_active)`` against the reference on random inputs."""

    def test(fn):
        g = torch.Generator().manual_seed(0)
        n, G, decay, k = 20_000, 40, 0.95, 3.0
        z, u = torch.randn(n, G, generator=g), torch.rand(n, G, generator=g)
        got = fn(z, u, decay, k)
        expect(isinstance(got, torch.Tensor) and got.shape == (n, G),
               f"return one True/False per sample and feature, shape ({n}, {G}); got {shape_of(got)}")
        got = got.bool()
        want = active_features_reference(z, u, decay, k)
        if float((got != want).float().mean()) < 1e-4:  # equal up to rounding (a mean over the batch for s is fine)
            return
        per_sample = float(got.float().sum(1).mean())
        profile = decay ** torch.arange(G, dtype=torch.float32)
        scale = k / (0.5 * profile.sum())
        expect(not torch.equal(got, u < scale * profile * z.clamp(0, 1)) and not torch.equal(got, u < scale * profile * z),
               "z is a Gaussian, not a probability: push it through the normal CDF, torch.special.ndtr(z)")
        expect(not torch.equal(got, u < (k / (0.5 * G)) * torch.special.ndtr(z)),
               "feature g's probability is also scaled by decay**g (low indices are common)")
        drawn = profile * torch.special.ndtr(z)  # (n, G) the decayed probabilities before rescaling
        expect(float((got != (u < k * drawn / drawn.sum(-1, keepdim=True))).float().mean()) > 1e-4,
               "you rescaled each sample's drawn probabilities by their own mean, as the report's text says (its "
               "authors' code does it once per batch). The course rescales by one constant instead, s = mean_active "
               "/ (0.5 * sum_g decay**g) from E[Phi(z)] = 1/2, so that feature g's probability depends on its own "
               "z_g only (section 1 says why)")
        expect(abs(per_sample - k) < 0.3,
               f"on average {k:g} features should be on, got {per_sample:.2f}: choose the constant s so that "
               "sum_g s * decay**g * E[Phi(z_g)] = mean_active, with E[Phi(z)] = 1/2")
        expect(False, "a feature is on when u < s * decay**g * Phi(z_g); your answer differs from that "
                      f"in {int((got != want).sum())} of {n * G} places")

    return check("active_features", learner, active_features_reference, test,
                 hint="feature g is on when a uniform draw falls below its probability: a constant times decay to the "
                      "power g times the normal CDF of its correlated Gaussian; the constant makes the expected "
                      "number of active features mean_active",
                 how="turn each Gaussian into a probability with the standard normal CDF; multiply by decay to the "
                     "power of the feature's index and by one constant, fixed so that the expected count is "
                     "mean_active (the CDF of a standard Gaussian averages one half); compare the uniform draws "
                     "with those probabilities")


def _tiny_sae(alphas=(0.1, 1.0), h: int = 6, J: int = 10, seed: int = 0) -> SAE:
    """A small stack with decoder rows far from unit norm and non-zero encoder biases."""
    sae = SAE(SAEConfig(d_in=h, d_sae=J, l1_coeffs=alphas, steps=1, seed=seed), device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(len(alphas), J, 1, generator=g) * 2 + 0.5)  # row norms 0.5 .. 2.5
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=g))
    return sae


def sae_forward(learner: Callable) -> Callable:
    """Check ``sae_forward(sae, x, target) -> (x_hat, c, recon, l1)`` on a small stack of SAEs."""

    def test(fn):
        sae = _tiny_sae()
        g = torch.Generator().manual_seed(1)
        x = torch.rand(32, 6, generator=g)
        target = x + 0.1 * torch.randn(x.shape, generator=g)  # a denoising target differs from x
        with torch.no_grad():
            out = fn(sae, x, target)
            want = sae_forward_reference(sae, x, target)
        expect(isinstance(out, tuple) and len(out) == 4, "return four things: (x_hat, c, recon, l1)")
        x_hat, c, recon, l1 = out
        shapes = [(2, 32, 6), (2, 32, 10), (2,), (2,)]
        for name, got, shape in zip(("x_hat", "c", "recon", "l1"), out, shapes):
            expect(tuple(got.shape) == shape, f"{name} should have shape {shape} (instances first), got {tuple(got.shape)}")
        expect(bool((c >= 0).all()), "c = ReLU(x W_enc + b_enc): the coefficients are never negative")
        expect(torch.allclose(c, want[1], atol=1e-5), "c = ReLU(x @ W_enc + b_enc) for each instance "
                                                      "(W_enc is (inst, h, J), b_enc is (inst, J))")
        raw = torch.einsum("ibj,ijh->ibh", c, sae.W_dec)
        expect(not torch.allclose(x_hat, raw, atol=1e-5), "decoder rows must be unit norm on the forward pass: "
                                                          "divide each row of W_dec by its norm before decoding")
        expect(torch.allclose(x_hat, want[0], atol=1e-5), "x_hat = c @ D with D the unit-norm decoder rows")
        expect(not torch.allclose(recon, (want[0] - x).pow(2).mean(-1).mean(-1), atol=1e-7),
               "the reconstruction is compared with target, not with x (a denoising SAE sees a noisy x)")
        expect(not torch.allclose(recon, (want[0] - target).pow(2).sum(-1).mean(-1), atol=1e-6),
               "the reconstruction term is (1/h)||target - x_hat||^2: average over the h dimensions, then the batch")
        expect(torch.allclose(recon, want[2], atol=1e-6), "recon = (1/h)||target - x_hat||^2 averaged over the batch, "
                                                          "one number per instance")
        J = sae.W_dec.shape[1]
        expect(not torch.allclose(l1, want[3] * J, rtol=1e-4), "the L1 term must be divided by J as in the report: "
                                                              "(alpha / J) ||c||_1")
        expect(torch.allclose(l1, want[3], rtol=1e-4), "l1 = (alpha / J) ||c||_1 averaged over the batch, with each "
                                                       "instance's own alpha (sae.l1_coeffs)")
        # It must train: gradients reach the encoder and decoder.
        sae.zero_grad()
        x_hat, c, recon, l1 = fn(sae, x, target)
        total = (recon + l1).sum()
        expect(total.requires_grad, "the loss must depend on sae.W_enc and sae.W_dec through autograd "
                                    "(no .detach(), no torch.no_grad)")
        total.backward()
        expect(sae.W_enc.grad is not None and sae.W_dec.grad is not None and bool(sae.W_dec.grad.abs().sum() > 0),
               "the loss must depend on sae.W_enc and sae.W_dec through autograd (no .detach(), no torch.no_grad)")
        # ... and the same gradients as the reference: a normalisation cut from the graph trains another model.
        mine = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
        sae.zero_grad()
        _, _, r_recon, r_l1 = sae_forward_reference(sae, x, target)
        (r_recon + r_l1).sum().backward()
        for name in ("W_enc", "b_enc", "W_dec"):
            ref = getattr(sae, name).grad
            expect(name in mine and torch.allclose(mine[name], ref, rtol=1e-4, atol=1e-6),
                   f"your loss has the right values but the wrong gradient with respect to {name}"
                   + (": the decoder rows' normalisation must stay in the graph (divide by W_dec.norm(...), not by a "
                      "detached norm or one computed under torch.no_grad), so the gradient sees that a row's length "
                      "does not change x_hat" if name == "W_dec" else
                      ": part of the computation is cut from the graph (.detach(), .data or numbers)"))

    return check("sae_forward", learner, sae_forward_reference, test,
                 hint="encode with a ReLU, decode with unit-length decoder rows, and return the reconstruction error "
                      "and the L1 penalty, scaled by alpha over the dictionary size, for each instance",
                 how="normalise the decoder rows inside the forward pass, so the gradient flows through the "
                     "normalisation; the reconstruction loss is the squared error averaged over dimensions and "
                     "batch; the L1 term sums the codes over latents, averages over the batch and multiplies by "
                     "alpha divided by the number of latents")


def mmcs(learner: Callable) -> Callable:
    """Check ``mmcs(learned, truth)`` on dictionaries with a known answer."""

    def test(fn):
        g = torch.Generator().manual_seed(0)
        truth = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
        # A larger learned dictionary: the true features (scaled by 3) plus 8 random extras;
        # the true features are passed at length 0.5. Cosines do not care about lengths.
        learned = torch.cat([3 * truth, torch.randn(8, 16, generator=g)])
        got = float(fn(learned, 0.5 * truth))
        expect(all(abs(got - wrong) > 1e-4 for wrong in (0.5, 1.5, 3.0)),
               "normalise both sets of vectors to unit length before taking dot products: a cosine ignores length")
        axis_msg = ("MMCS takes the max over learned features for each true feature, not over true features "
                    "(a learned feature with no true twin must not lower the score, a true feature with none must)")
        expect(abs(got - float(mmcs_reference(truth, learned))) > 1e-5, axis_msg)
        expect(abs(got - 1.0) < 1e-5, f"every true feature is in the learned dictionary, so MMCS is 1; got {got:.3f}")
        # A learned dictionary that holds only half of the true features, twice each.
        half = torch.cat([truth[:4], truth[:4]])
        got = float(fn(half, truth))
        over_truth = float(mmcs_reference(truth, half))  # max over true features for each learned one
        expect(abs(got - over_truth) > 1e-5, axis_msg)
        expect(abs(got - float(mmcs_reference(half, truth))) < 1e-5,
               "for each true feature (row of truth) take the best cosine with any learned feature, then average")

    return check("mmcs", learner, mmcs_reference, test,
                 hint="for each true feature, the best cosine similarity any learned feature reaches; MMCS is the mean "
                      "of those over the true features",
                 how="normalise both sets of rows to unit length, form every cosine between a true and a learned "
                     "feature, take the maximum over the learned ones (not over the true ones), then the mean")

