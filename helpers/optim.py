"""What every trainer in the course shares: the optimizer, the learning-rate schedule, and
the check that stops a run the moment its loss stops being a number.

Kept tiny on purpose: a trainer reads ``opt = adam(model.parameters(), lr)``, then
``loss.sum().backward(); opt.step(); opt.zero_grad()`` in its own one-screen loop.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

LR_SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")


def adam(params: Iterable[torch.nn.Parameter], lr: float, **kwargs) -> torch.optim.Adam:
    """torch's Adam, fused into one kernel per parameter where the device supports it (CPU and
    CUDA in recent torch), else the multi-tensor ``foreach`` version (MPS, old torch)."""
    params = [p for p in params if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True, **kwargs)


def lr_factor(schedule: str, step: int, steps: int, warmup: float = 0.05) -> float:
    """Multiplier of the base learning rate at ``step`` of ``steps``.

    ``constant``; ``cosine`` and ``linear`` decay to 0 at the end; ``warmup_cosine`` ramps up
    linearly over the first ``warmup`` fraction of the run, then decays as a cosine (the configs
    check the name).
    """
    if schedule == "constant":
        return 1.0
    frac = step / max(steps, 1)
    if schedule == "linear":
        return 1.0 - frac
    if schedule == "warmup_cosine":
        n_warm = max(1, int(warmup * steps))
        if step < n_warm:
            return (step + 1) / n_warm
        frac = (step - n_warm) / max(steps - n_warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def scheduler(opt: torch.optim.Optimizer, schedule: str, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr_factor`` as a torch scheduler: call ``.step()`` after each ``opt.step()``."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step, steps))


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the instances and the step."""


def check_finite(per_instance_loss: torch.Tensor, step: int, what: str, labels=None) -> None:
    """Raise ``NonFiniteLossError`` if any instance's loss is NaN or infinite.

    ``per_instance_loss``: (inst,) losses of one step. ``labels``: optional per-instance
    descriptions (e.g. the L1 coefficient) used in the message. Costs one device sync, so
    trainers call it on logging steps, not every step.
    """
    bad = ~torch.isfinite(per_instance_loss.detach())
    if not bool(bad.any()):
        return
    idx = bad.nonzero().flatten().tolist()
    names = [f"{i}" + (f" ({labels[i]})" if labels is not None else "") for i in idx]
    raise NonFiniteLossError(
        f"{what}: the loss of instance(s) {', '.join(names)} became NaN or infinite at step {step}. "
        "Likely causes: a NaN or inf in the training data, a learning rate too large for this "
        "problem, or a NaN/inf hyperparameter. Check the data with torch.isfinite(x).all(), "
        "then try a 10x smaller lr."
    )
