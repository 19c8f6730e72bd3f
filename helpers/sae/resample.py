"""Reviving latents that do nothing useful: dead ones, and the rarer of two near-duplicates.

A latent that stopped firing gets no gradient and never comes back by itself. Resampling
points it somewhere new: at an input the SAE reconstructs badly, in the hope that the input
holds a feature no latent has yet (Anthropic's "Towards monosemanticity" recipe). Where exactly
it points matters (notebook 02, section 6):

* ``input``: at the input itself (Anthropic's choice);
* ``residual``: at what the SAE got wrong, ``x - x_hat``. With an L1 penalty this is mostly the
  penalty's *shrinkage* of features the SAE already has, so the revived latent chases those,
  rarely fires and dies again;
* ``refit``: at the residual left after refitting the active latents' coefficients without the
  penalty (``helpers.recovery.refit_on_support``): only what no active latent can express.

``train_sae`` calls this every ``ResampleConfig.every`` steps (``SAEConfig.resample``); benchmarks/sample_efficiency.py
measures what each choice buys.
"""
from __future__ import annotations

import torch

from helpers.recovery import refit_on_support

RESAMPLE_TARGETS = ("input", "residual", "refit")
POOL = {"input": 8192, "residual": 8192, "refit": 2048}
"""Fresh samples drawn to aim revived latents at, per target (the refit costs 20 passes over them)."""


def redundant(W_dec: torch.Tensor, fires: torch.Tensor, cos: float) -> torch.Tensor:
    """(I, J) latents whose decoder row is within ``cos`` of a latent that fired more often.

    W_dec: (I, J, h) decoder rows; fires: (I, J) how often each latent fired lately; ``cos`` 0
    marks none. With J = G a duplicate costs a feature: two latents splitting one feature's
    activation pay the same L1 as one latent, nothing pushes them apart, and some rare feature
    goes unmatched.
    """
    if not cos:
        return torch.zeros_like(fires, dtype=torch.bool)
    D = W_dec / W_dec.norm(dim=-1, keepdim=True)
    close = D @ D.transpose(1, 2) > cos                                       # (I, J, J)
    J = fires.shape[-1]
    order = fires * J - torch.arange(J, device=fires.device)                  # ties go to the lower index
    beaten = order[:, None, :] > order[:, :, None]                            # [i, j, k]: k fired more than j
    return (close & beaten).any(-1)


@torch.no_grad()
def resample_latents_(opt: torch.optim.Optimizer, W_enc: torch.Tensor, W_dec: torch.Tensor, b_enc: torch.Tensor,
                      b_dec: torch.Tensor, x: torch.Tensor, bad: torch.Tensor, to: str = "refit", *,
                      generator: torch.Generator) -> int:
    """Point each latent marked in ``bad`` (I, J) at a badly reconstructed sample of ``x`` (N, h).

    W_enc (I, h, J), W_dec (I, J, h), b_enc (I, J), b_dec (I, h): the SAE's parameters, changed in
    place. Samples are drawn with probability proportional to the square of their squared error
    (for ``refit``: under the kept latents only); the revived latent's decoder row is the chosen direction
    (``to``, see the module docstring), its encoder column the same direction at 0.2x the mean
    norm of the kept latents' columns, its bias 0, and its Adam moments are cleared. Returns how
    many latents were revived. ``generator`` (on ``x``'s device) draws the samples: the
    result never depends on what else drew random numbers before.
    """
    if not bad.any():
        return 0
    D = W_dec / W_dec.norm(dim=-1, keepdim=True)                              # (I, J, h)
    c = torch.relu(torch.matmul(x - b_dec[:, None, :], W_enc) + b_enc[:, None, :])   # (I, N, J)
    if to == "refit":                                                         # no shrinkage left, and
        c = refit_on_support(x, D, c * ~bad[:, None, :], b_dec[:, None, :])   # only the kept latents
    resid = x - torch.baddbmm(b_dec[:, None, :], c, D)                        # (I, N, h)
    loss = resid.pow(2).sum(-1)                                               # (I, N)
    for i in range(bad.shape[0]):
        idx = bad[i].nonzero().flatten()
        if idx.numel() == 0:
            continue
        pick = torch.multinomial(loss[i].square(), idx.numel(), replacement=idx.numel() > x.shape[0],
                                 generator=generator)
        v = x[pick] - b_dec[i] if to == "input" else resid[i, pick]
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)                 # (n_bad, h)
        alive_norm = W_enc[i][:, ~bad[i]].norm(dim=0).mean() if (~bad[i]).any() else 1.0
        W_dec[i, idx] = v
        W_enc[i][:, idx] = v.T * alive_norm * 0.2
        b_enc[i, idx] = 0.0
        for p, sl in ((W_dec, (i, idx)), (W_enc, (i, slice(None), idx)), (b_enc, (i, idx))):
            state = opt.state.get(p, {})
            for buf in ("exp_avg", "exp_avg_sq"):                             # a fresh start for its moments
                if buf in state:
                    state[buf][sl] = 0.0
    return int(bad.sum())
