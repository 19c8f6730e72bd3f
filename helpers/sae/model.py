"""The sparse autoencoder, many at once: one ``SAE`` holds ``n_instances`` independent SAEs of
the same shape (one per L1 coefficient, or per seed) stacked along a leading instance
dimension, so a whole L1 sweep is one model and one set of batched matrix products.

For each instance (the interim report's SAE)::

    pre   = (x - b_dec) W_enc + b_enc               # pre-activations, (J,)
    c     = activation(pre)                         # ReLU here; subclasses change only this
    x_hat = c D + b_dec,  D = W_dec / ||W_dec||     # decoder rows kept at unit norm
    loss  = (1/h) ||x - x_hat||^2 + (alpha / J) ||c||_1

The report has no decoder bias: ``b_dec`` stays 0 unless ``decoder_bias=True``, which is what
language-model activations want. ``l1_divide_by_d_sae=False`` gives alpha ||c||_1, the form
most libraries use; under the report's form the best alpha grows with J.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from helpers.device import resolve_device, stream_seed
from helpers.sae.config import SAEConfig
from helpers.sae.fused import StandardSAEStep, current_step_dtype
from helpers.sae.registry import register_sae_class, sae_class


class ForwardOutput(NamedTuple):
    """Everything one forward pass computes, per instance."""

    x_hat: torch.Tensor
    """(inst, batch, d_in) reconstruction."""
    acts: torch.Tensor
    """(inst, batch, d_sae) dictionary coefficients c."""
    recon_loss: torch.Tensor
    """(inst,) (1/h) ||x - x_hat||^2, averaged over the batch."""
    l1_loss: torch.Tensor
    """(inst,) the sparsity term including its coefficient, averaged over the batch."""
    loss: torch.Tensor
    """() sum over instances of recon + sparsity (instances do not interact, so the sum's
    gradient trains each instance on its own loss)."""


_FUSED_STEPS = ("pre_acts", "activation", "decoder_directions", "decode", "sparsity_loss", "_penalty")
"""The steps ``StandardSAEStep`` writes out: a subclass that overrides one trains through autograd."""


class SAE(nn.Module):
    """A stack of ``cfg.n_instances`` sparse autoencoders with a ReLU activation and L1 penalty.

    ``SAE(cfg)`` builds the subclass that ``cfg.architecture`` names (``TopKSAE``, ...), so code
    that makes SAEs from configs, such as a grid sweep, works for every variant unchanged.
    """

    architecture = "standard"
    """The name ``SAEConfig.architecture`` uses for this class (see ``register_sae_class``)."""
    saved_as = "standard"
    """SAELens' name for how this class is saved (``helpers.sae.io``)."""
    exact_norm_fold = True
    """Whether a saved decoder with non-unit rows loads exactly by moving each row's norm into its
    latent (true for ReLU and JumpReLU; a TopK ranking would change)."""
    takes_auxk = False
    """Whether the class has an AuxK loss, so that ``SAEConfig.auxk`` may be set for its architecture.
    Its ``forward`` then takes ``steps_since_fired`` (inst, d_sae), the trainer's count of batches since
    each latent last fired, which ``train_sae`` passes on every step while ``cfg.auxk`` is set (the
    AuxK loss reads it to find the dead latents). The model itself keeps no record."""
    variant_config = None
    """The frozen dataclass of this class's own settings, which ``SAEConfig.variant`` then holds
    (``JumpReLUSAE``: ``JumpReLUConfig``); None: it has none. A new variant with settings of its
    own is this class, that dataclass and one ``register_sae_class`` line; its settings are then
    saved, cached and gridded with the rest of the config."""

    def __new__(cls, cfg: SAEConfig | None = None, *args, **kwargs):
        if cls is SAE and cfg is not None:  # (None: copy/pickle)
            cls = sae_class(cfg.architecture)
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig, device: str | torch.device | None = None):
        super().__init__()
        if cfg.architecture != self.architecture:
            raise ValueError(f"{type(self).__name__} needs cfg.architecture={self.architecture!r}, "
                             f"got {cfg.architecture!r}; or build SAE(cfg), which picks the class")
        self.cfg = cfg
        dev = resolve_device(device)  # "meta": shapes without memory
        I, h, J = cfg.n_instances, cfg.d_in, cfg.d_sae
        W_dec = torch.empty(I, J, h)
        for i in range(I):  # orthogonal init (as in the report), a different seed per instance
            gen = torch.Generator().manual_seed(stream_seed(cfg.seed + i, "sae-init"))
            W_dec[i] = nn.init.orthogonal_(torch.empty(J, h), generator=gen)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dev))  # (I, J, h)
        # The encoder starts as the decoder's transpose: every latent begins by reading the
        # direction it writes, which makes early training far less noisy. A copy, never a view: with
        # J = 1 the transpose is already contiguous, and .contiguous() would share W_dec's memory.
        self.W_enc = nn.Parameter(W_dec.transpose(1, 2).clone(memory_format=torch.contiguous_format).to(dev))  # (I, h, J)
        self.b_enc = nn.Parameter(torch.zeros(I, J, device=dev))
        self.b_dec = nn.Parameter(torch.zeros(I, h, device=dev), requires_grad=cfg.decoder_bias)
        self.register_buffer("l1_coeffs", torch.tensor(cfg.l1_coeffs, device=dev))  # (I,)

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        I, h = self.cfg.n_instances, self.cfg.d_in
        if not isinstance(x, torch.Tensor) or x.dtype != self.W_enc.dtype:
            got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"an object of type {type(x).__name__}"
            raise TypeError(f"x (the activations) must be a {self.W_enc.dtype} tensor like the SAE's weights, got {got}: "
                            f"convert it with torch.as_tensor(x).to({self.W_enc.dtype})")
        if x.shape[-1] != h or x.dim() not in (2, 3) or (x.dim() == 3 and x.shape[0] not in (1, I)):
            raise ValueError(
                f"expected activations of shape (batch, {h}) or ({I}, batch, {h}), got {tuple(x.shape)}"
            )
        return x

    # --- the model -------------------------------------------------------------------------
    def decoder_directions(self) -> torch.Tensor:
        """The learned dictionary D: unit-norm feature directions, (inst, d_sae, d_in)."""
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def renormalize_decoder_(self) -> None:
        """Rescale the stored decoder rows to unit length (the directions do not change)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(x - b_dec) W_enc + b_enc: (batch, d_in) or (inst, batch, d_in) -> (inst, batch, d_sae)."""
        x = self._check_input(x)
        if self.cfg.decoder_bias:
            x = x - self.b_dec[:, None, :]                  # (I, B, h)
        x = x.expand(self.cfg.n_instances, *x.shape[-2:])   # a view: instances share one batch
        return torch.baddbmm(self.b_enc[:, None, :], x, self.W_enc)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Latents from pre-activations, (inst, batch, d_sae): what a variant overrides."""
        return pre.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dictionary coefficients c: (batch, d_in) or (inst, batch, d_in) -> (inst, batch, d_sae)."""
        return self.activation(self.pre_acts(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """x_hat = c D + b_dec: (inst, batch, d_sae) -> (inst, batch, d_in)."""
        return torch.baddbmm(self.b_dec[:, None, :], acts, self.decoder_directions())

    def sparsity_loss(self, pre: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(inst,) alpha ||c||_1 (over J with ``l1_divide_by_d_sae``), averaged over the batch."""
        return acts.sum(-1).mean(-1) * self._penalty()  # c >= 0, so ||c||_1 is the sum

    def _penalty(self) -> torch.Tensor:
        return self.l1_coeffs / self.cfg.d_sae if self.cfg.l1_divide_by_d_sae else self.l1_coeffs

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> ForwardOutput:
        """Reconstruct ``x``; losses are against ``target`` (default ``x``), per instance."""
        target = x if target is None else target
        if self._fused_step_applies(self._check_input(x), target):
            # The same maths as the lines below, with the backward pass written out (helpers.sae.fused).
            x_hat, acts, recon, sparsity = StandardSAEStep.apply(
                x, target, self.W_enc, self.b_enc, self.W_dec, self.b_dec, self._penalty(),
                self.cfg.decoder_bias, current_step_dtype())
            return ForwardOutput(x_hat, acts, recon, sparsity, (recon + sparsity).sum())
        pre = self.pre_acts(x)                                        # (I, B, J)
        acts = self.activation(pre)                                   # (I, B, J)
        x_hat = self.decode(acts)                                     # (I, B, h)
        recon = (x_hat - target).pow(2).mean(-1).mean(-1)             # (I,)
        sparsity = self.sparsity_loss(pre, acts)                      # (I,)
        return ForwardOutput(x_hat, acts, recon, sparsity, (recon + sparsity).sum())

    def _fused_step_applies(self, x: torch.Tensor, target: torch.Tensor) -> bool:
        """Training the plain ReLU + L1 SAE (a variant that changes any step of it takes the plain path)."""
        cls = type(self)
        return (torch.is_grad_enabled() and self.W_dec.requires_grad and not x.requires_grad
                and not target.requires_grad and all(getattr(cls, name) is getattr(SAE, name) for name in _FUSED_STEPS))

    def loss(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """(inst,) reconstruction + sparsity loss of each instance: what training minimises."""
        out = self(x, target)
        return out.recon_loss + out.l1_loss

    # --- what a saved file holds beyond W_enc, b_enc, W_dec, b_dec (helpers.sae.io) ---------------
    def file_extras(self, i: int) -> tuple[dict[str, torch.Tensor], dict]:
        """(extra tensors, extra cfg.json fields) to save for instance ``i``."""
        return {}, {}

    @classmethod
    def file_shapes(cls, d_sae: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the extra tensors a file of this class must hold."""
        return {}

    @classmethod
    def config_from_file(cls, meta: dict, fields: dict) -> dict:
        """``SAEConfig`` fields read from a file's ``cfg.json`` beyond the common ones."""
        return fields

    def load_extras_(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy the extra tensors of a one-instance file into this one-instance SAE."""

    # --- taking a stack apart --------------------------------------------------------------
    def select(self, i: int) -> "SAE":
        """Instance ``i`` as a one-instance SAE of the same class (a copy)."""
        if not -self.cfg.n_instances <= i < self.cfg.n_instances:
            raise IndexError(f"instance {i} out of range for {self.cfg.n_instances} instances")
        i = i % self.cfg.n_instances
        cfg = replace(self.cfg, l1_coeffs=(self.cfg.l1_coeffs[i],), seed=self.cfg.seed + i)
        one = type(self)(cfg, device=self.device)
        with torch.no_grad():
            mine = self.state_dict()
            for name, tensor in one.state_dict().items():  # every tensor leads with the instance
                tensor.copy_(mine[name][i : i + 1])
        one.train(self.training)
        return one


register_sae_class(SAE)
