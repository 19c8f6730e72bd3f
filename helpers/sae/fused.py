"""The standard SAE's training step with its backward pass written out: the same numbers as
autograd through ``SAE.forward``'s plain lines (tested equal), with fewer intermediates kept and
fewer passes over them than autograd makes (``benchmarks/sae_throughput.py`` times it).

For one instance, with x_c = x - b_dec, pre = x_c W_enc + b_enc, c = ReLU(pre),
D = W_dec / ||W_dec|| (row-wise), x_hat = c D + b_dec, err = x_hat - target and
loss = g_r (1/(B h)) ||err||^2 + g_s (k/B) sum(c)  (g_r, g_s: the incoming gradients of the two
loss terms, 1 when training on their sum; k = alpha/J or alpha)::

    dL/dx_hat = 2 g_r err / (B h)            (+ any gradient flowing into x_hat itself)
    dL/dc     = dL/dx_hat D^T + g_s k / B    (+ any gradient flowing into c itself)
    dL/dpre   = dL/dc where pre > 0, else 0
    dL/dW_enc = x_c^T dL/dpre,   dL/db_enc = sum over the batch of dL/dpre
    dL/dD     = c^T dL/dx_hat,   dL/dW_dec = (dL/dD - D * <dL/dD, D>) / ||W_dec||  (per row)
    dL/db_dec = sum over the batch of (dL/dx_hat - dL/dpre W_enc^T)

Five matrix products in all (two forward, three backward), the least any SAE step can do.

On a CPU with native bfloat16 arithmetic (``avx512_bf16`` or AMX), ``train_sae`` gives the five
products bfloat16 inputs with float32 accumulation (``SAEConfig.matmul_dtype``): about 1.5x
faster again on the machine it was measured on. Weights, Adam's state, the losses and every elementwise step stay float32, and so
does every forward pass outside training.
"""
from __future__ import annotations

import contextlib
import functools

import torch

MATMUL_DTYPES = ("auto", "float32", "bfloat16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Does this CPU multiply bfloat16 in hardware (x86 ``avx512_bf16`` or ``amx_bf16``)? Elsewhere
    torch emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux (macOS, Windows): no way to ask cheaply, so no
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_matmul_dtype(name: str, device: torch.device) -> torch.dtype:
    """``SAEConfig.matmul_dtype`` (checked there) on ``device``: ``auto`` is bfloat16 on a CPU with
    native bfloat16, else float32 (GPUs keep float32: a free Colab T4 has no bfloat16 units)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    return getattr(torch, name)


_step_dtype = torch.float32


@contextlib.contextmanager
def step_matmul_dtype(dtype: torch.dtype):
    """Within this block the fused step multiplies in ``dtype`` (``train_sae`` enters it with the
    config's ``matmul_dtype``; everywhere else, evaluations and exercise checks included, float32)."""
    global _step_dtype
    before, _step_dtype = _step_dtype, dtype
    try:
        yield
    finally:
        _step_dtype = before


def current_step_dtype() -> torch.dtype:
    return _step_dtype


def _mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bmm with inputs in ``dtype`` and a float32 result."""
    if dtype == torch.float32:
        return torch.bmm(a, b)
    return torch.bmm(a.to(dtype), b.to(dtype)).float()


class StandardSAEStep(torch.autograd.Function):
    """(x_hat, c, recon, sparsity) of a stack of ReLU + L1 SAEs, with a hand-written backward."""

    @staticmethod
    def forward(ctx, x, target, W_enc, b_enc, W_dec, b_dec, penalty, decoder_bias: bool, dtype: torch.dtype):
        I, B, h = W_enc.shape[0], x.shape[-2], x.shape[-1]
        x_c = x - b_dec[:, None, :] if decoder_bias else x.expand(I, B, h)     # (I, B, h)
        x_c = x_c.to(dtype)  # (a no-op in float32)
        acts = _mm(x_c, W_enc, dtype).add_(b_enc[:, None, :]).relu_()          # (I, B, J)
        norms = W_dec.norm(dim=-1, keepdim=True)                               # (I, J, 1)
        D = W_dec / norms
        acts_mm = acts.to(dtype)  # (the same tensor in float32) used by two products
        x_hat = _mm(acts_mm, D, dtype).add_(b_dec[:, None, :])                 # (I, B, h)
        err = x_hat - target
        recon = err.pow(2).mean(-1).mean(-1)                                   # (I,)
        sparsity = acts.sum(-1).mean(-1) * penalty                             # (I,)
        ctx.save_for_backward(x_c, acts, acts_mm, D, norms, err, W_enc, penalty)
        ctx.decoder_bias, ctx.dtype = decoder_bias, dtype
        ctx.set_materialize_grads(False)  # unused outputs (x_hat, c in training) send None
        return x_hat, acts, recon, sparsity

    @staticmethod
    def backward(ctx, g_xhat_out, g_acts_out, g_recon, g_sparsity):
        x_c, acts, acts_mm, D, norms, err, W_enc, penalty = ctx.saved_tensors
        B, h, dtype = err.shape[-2], err.shape[-1], ctx.dtype
        if g_recon is not None:
            g_xhat = err * (g_recon * (2.0 / (B * h)))[:, None, None]          # (I, B, h)
        else:
            g_xhat = torch.zeros_like(err)
        if g_xhat_out is not None:
            g_xhat = g_xhat + g_xhat_out
        g_xhat_mm = g_xhat.to(dtype)  # used by two products
        g_acts = _mm(g_xhat_mm, D.transpose(1, 2), dtype)                      # (I, B, J)
        if g_sparsity is not None:
            g_acts += (g_sparsity * penalty / B)[:, None, None]
        if g_acts_out is not None:
            g_acts += g_acts_out
        g_pre = torch.ops.aten.threshold_backward(g_acts, acts, 0.0)           # zero where c = 0
        g_W_enc = _mm(x_c.transpose(1, 2), g_pre, dtype)                       # (I, h, J)
        g_b_enc = g_pre.sum(1)                                                 # (I, J)
        g_D = _mm(acts_mm.transpose(1, 2), g_xhat_mm, dtype)                   # (I, J, h)
        g_W_dec = g_D.addcmul_(D, (g_D * D).sum(-1, keepdim=True), value=-1.0).div_(norms)
        g_b_dec = None
        if ctx.decoder_bias:
            g_b_dec = g_xhat.sum(1) - torch.bmm(g_b_enc[:, None, :], W_enc.transpose(1, 2))[:, 0]
        return None, None, g_W_enc, g_b_enc, g_W_dec, g_b_dec, None, None, None
