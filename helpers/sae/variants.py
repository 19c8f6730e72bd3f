"""SAE variants: each is one subclass that overrides only what differs from the ReLU + L1 SAE.

* ``TopKSAE`` (Gao et al. 2024): keep the k largest pre-activations of each example (then
  ReLU); sparsity is set by k, so there is no penalty term. A latent that loses every top-k
  contest gets no gradient and never comes back (it is dead). ``SAEConfig(auxk=AuxKConfig())``
  switches on the paper's remedy, the AuxK loss (``TopKSAE.aux_loss``), which pulls dead latents
  toward what the live ones leave over. A training term only: encoding and the reconstruction loss
  are unchanged, and which latents are dead comes from the trainer's record of when each last
  fired (``train_sae`` passes it to ``forward``), so a forward pass changes no state.
* ``BatchTopKSAE`` (Bussmann et al. 2024): keep the k x batch largest activations of the whole
  batch, so busy examples get more latents than quiet ones. While training it tracks a
  threshold (a moving average of the smallest kept activation); in ``.eval()`` mode it encodes
  one example at a time with that threshold, which is how SAELens saves it (as ``jumprelu``).
* ``JumpReLUSAE`` (Rajamanoharan et al. 2024): c = pre * [pre > theta] with a learned threshold
  theta per latent and an L0 penalty. The step has no useful gradient, so theta learns through
  a straight-through estimator: a rectangle kernel of width ``JumpReLUConfig.bandwidth`` around
  theta. Its two settings are the variant's own (``SAEConfig.variant``), as a reader's variant's would be.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from helpers.sae.config import number
from helpers.sae.model import SAE, ForwardOutput
from helpers.sae.registry import register_sae_class

TOPK_THRESHOLD_LR = 0.01
"""Weight of each batch in BatchTopK's moving-average threshold (SAELens' default)."""


def topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    """TopK (Gao et al. 2024): each example's ``k`` largest pre-activations, ReLU'd; zeros elsewhere.
    pre (inst, batch, J) -> (inst, batch, J). (Notebook 05's exercise 1.)"""
    values, idx = pre.topk(int(k), dim=-1, sorted=False)  # (I, B, k)
    return torch.zeros_like(pre).scatter(-1, idx, values.relu())


def batchtopk_activation(pre: torch.Tensor, k: float) -> torch.Tensor:
    """BatchTopK (Bussmann et al. 2024) while training: per instance the ``k x batch`` largest ReLU'd
    activations of the whole batch; zeros elsewhere. pre (inst, batch, J) -> (inst, batch, J)."""
    I, B, J = pre.shape
    flat = pre.relu().reshape(I, B * J)
    values, idx = flat.topk(min(int(k * B), B * J), dim=-1, sorted=False)
    return torch.zeros_like(flat).scatter(-1, idx, values).reshape(I, B, J)


@register_sae_class
class TopKSAE(SAE):
    architecture = saved_as = "topk"
    exact_norm_fold = False
    takes_auxk = True

    @property
    def aux_k(self) -> int:
        """Dead latents in AuxK's top k: ``cfg.auxk.k``, or the paper's k_aux = d_in / 2."""
        auxk = self.cfg.auxk
        return self.cfg.d_in // 2 if auxk is None or auxk.k is None else auxk.k

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_activation(pre, self.cfg.k)

    def file_extras(self, i):
        return {}, {"k": int(self.cfg.k), "rescale_acts_by_decoder_norm": False}  # our rows are unit already

    @classmethod
    def config_from_file(cls, meta, fields):
        return {**fields, "k": meta.get("k", fields.get("k"))}

    def sparsity_loss(self, pre: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return pre.new_zeros(pre.shape[0])  # k sets the sparsity

    def dead_mask(self, steps_since_fired: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(inst, d_sae) latents that have now gone ``cfg.auxk.dead_window`` training batches without firing.

        ``steps_since_fired`` (inst, d_sae): the trainer's count of batches before this one since
        each latent last fired (0: it fired in the previous batch); ``acts`` (inst, batch, d_sae):
        this batch's latents. A latent that fires in this batch is live; any other has gone one
        batch more without firing.
        """
        since = (steps_since_fired + 1).masked_fill((acts > 0).any(1), 0)
        return since >= self.cfg.auxk.dead_window

    def aux_loss(self, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """(inst,) AuxK: how badly the dead latents' top ``aux_k`` (``cfg.auxk.k``) reconstruct ``residual``.

        ``pre`` (inst, batch, d_sae), ``residual`` = target - x_hat (inst, batch, d_in), held fixed,
        ``dead`` (inst, d_sae). The error is divided by the residual's own size (so the term does
        not fade as the live latents improve) and scaled down while fewer than ``aux_k`` latents
        are dead; only dead latents take part, so live ones get no gradient from it.
        """
        k_aux = min(self.aux_k, self.cfg.d_sae)
        candidates = torch.where(dead[:, None, :], pre, -math.inf)                   # (I, B, J)
        values, idx = candidates.topk(k_aux, dim=-1, sorted=False)                   # -inf (live) -> 0
        aux_acts = torch.zeros_like(pre).scatter(-1, idx, values.relu())
        aux_hat = torch.bmm(aux_acts, self.decoder_directions())                     # (I, B, h), no bias
        err = (aux_hat - residual).pow(2).mean(-1).mean(-1)                          # (I,)
        normalised = err / residual.pow(2).mean(-1).mean(-1).clamp_min(1e-12)
        share = (dead.sum(-1) / self.aux_k).clamp(max=1.0)                           # 0 when none is dead
        return self.cfg.auxk.coeff * share * normalised

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None,
                steps_since_fired: torch.Tensor | None = None) -> ForwardOutput:
        """As ``SAE.forward``; in training with ``cfg.auxk`` set and the trainer's
        ``steps_since_fired`` (see ``dead_mask``) the sparsity slot (``l1_loss``, which TopK leaves
        at 0) carries the AuxK loss, so ``loss`` trains on it. Without that record no latent counts
        as dead, and there is no AuxK term."""
        out = super().forward(x, target)
        if not self.training or self.cfg.auxk is None or steps_since_fired is None:
            return out
        residual = ((x if target is None else target) - out.x_hat).detach()
        aux = self.aux_loss(self.pre_acts(x), residual, self.dead_mask(steps_since_fired, out.acts))
        return out._replace(l1_loss=out.l1_loss + aux, loss=out.loss + aux.sum())


@register_sae_class
class BatchTopKSAE(TopKSAE):
    # SAELens saves a trained BatchTopK for inference as a JumpReLU whose threshold is the learned
    # batch threshold; so do we: a file says "batchtopk" only for SAELens' training checkpoints.
    architecture, saved_as = "batchtopk", "jumprelu"

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        self.register_buffer("topk_threshold", torch.zeros(cfg.n_instances, device=self.device))  # (I,)

    def file_extras(self, i):
        return {"threshold": torch.full((self.cfg.d_sae,), float(self.topk_threshold[i]))}, {}

    @classmethod
    def file_shapes(cls, d_sae):
        return {"topk_threshold": ()}

    def load_extras_(self, tensors):
        self.topk_threshold.fill_(float(tensors["topk_threshold"]))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if not self.training:  # per example, with the learned threshold (a JumpReLU)
            return pre.relu() * (pre > self.topk_threshold[:, None, None])
        acts = batchtopk_activation(pre, self.cfg.k)
        with torch.no_grad():  # the smallest kept activation of each instance, averaged over batches
            smallest = acts.masked_fill(acts <= 0, math.inf).amin(dim=(1, 2))  # (I,)
            seen = torch.isfinite(smallest)
            moved = torch.lerp(self.topk_threshold, torch.where(seen, smallest, 0.0), TOPK_THRESHOLD_LR)
            self.topk_threshold.copy_(torch.where(seen, moved, self.topk_threshold))
        return acts


class JumpReLUFunction(torch.autograd.Function):
    """c = x [x > theta]; d/dx is the step (no estimator), d/dtheta the STE of the paper."""

    @staticmethod
    def forward(ctx, x, threshold, bandwidth: float):
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return x * (x > threshold)

    @staticmethod
    def backward(ctx, grad):
        x, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((x - threshold).abs() < eps / 2).to(grad.dtype)  # rectangle kernel K((x - theta) / eps)
        g_threshold = (-(threshold / eps) * window * grad).sum_to_size(threshold.shape)
        return grad * (x > threshold), g_threshold, None


class StepFunction(torch.autograd.Function):
    """[x > theta], counted by the L0 penalty; only theta gets a (straight-through) gradient."""

    @staticmethod
    def forward(ctx, x, threshold, bandwidth: float):
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((x - threshold).abs() < eps / 2).to(grad.dtype)
        return None, (-(1.0 / eps) * window * grad).sum_to_size(threshold.shape), None


@dataclass(frozen=True)
class JumpReLUConfig:
    """JumpReLU's own settings: ``SAEConfig(architecture="jumprelu", variant=JumpReLUConfig(...))``."""

    init_threshold: float = 0.01
    """Starting threshold of every latent (SAELens' default)."""
    bandwidth: float = 0.05
    """Width of the window in which the straight-through estimator passes threshold gradient."""

    def __post_init__(self) -> None:
        for name in ("init_threshold", "bandwidth"):
            example = f"JumpReLUConfig({name}={JumpReLUConfig.__dataclass_fields__[name].default})"
            value = number(f"JumpReLUConfig.{name}", getattr(self, name), example)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"JumpReLUConfig.{name} must be a positive finite number, got {value!r}: pass e.g. {example}")
            object.__setattr__(self, name, value)


@register_sae_class
class JumpReLUSAE(SAE):
    architecture = saved_as = "jumprelu"
    variant_config = JumpReLUConfig

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        # theta = exp(log_threshold) stays positive (SAELens trains the same parametrisation)
        start = torch.full((cfg.n_instances, cfg.d_sae), math.log(cfg.variant.init_threshold))
        self.log_threshold = nn.Parameter(start.to(self.device))  # (I, J)

    @property
    def threshold(self) -> torch.Tensor:
        """(inst, d_sae) theta of every latent."""
        return self.log_threshold.exp()

    def file_extras(self, i):
        return {"threshold": self.threshold[i].detach().float().cpu().contiguous()}, {}

    @classmethod
    def file_shapes(cls, d_sae):
        return {"threshold": (d_sae,)}

    def load_extras_(self, tensors):  # theta < 0 acts as theta = 0 on ReLU'd latents; log(0) = -inf is fine
        self.log_threshold.copy_(tensors["threshold"].clamp(min=0).log()[None])

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return JumpReLUFunction.apply(pre, self.threshold[:, None, :], self.cfg.variant.bandwidth)

    def sparsity_loss(self, pre: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(inst,) alpha x L0 (over J with ``l1_divide_by_d_sae``), the L0 through the STE."""
        l0 = StepFunction.apply(pre, self.threshold[:, None, :], self.cfg.variant.bandwidth).sum(-1).mean(-1)
        return l0 * self._penalty()
