"""Training a stack of toy models: one screen, autograd, fused Adam, a log back.

Every instance's loss is independent of the others', so the sum of the per-instance losses
has each instance's own gradient: one backward trains the whole stack.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import cpu_threads as _cpu_threads, stream_seed
from helpers.optim import adam, check_finite, scheduler
from helpers.toy.model import ToyModel


class TrainLog(NamedTuple):
    """What happened while training a stack of toy models."""

    steps: np.ndarray
    """(rows,) step at which each loss row was measured."""
    loss: np.ndarray
    """(rows, inst) training loss per instance (on that step's batch)."""
    final_loss: np.ndarray
    """(inst,) loss per instance on ``eval_samples`` fresh samples after training."""
    seconds: float
    """Wall-clock training time."""


THREADED_WORK = 1 << 23
"""Per-step elements (inst x n x batch) above which a CPU run keeps torch's thread pool."""


def cpu_threads(device: torch.device, work: int):
    """One CPU thread for small toy stacks (see ``helpers.device.cpu_threads``)."""
    return _cpu_threads(device, work, THREADED_WORK)


def loss_function(model: ToyModel):
    """``model.loss``, compiled when ``cfg.compile`` asks for it."""
    return torch.compile(model.loss) if model.cfg.compile else model.loss


@torch.no_grad()
def evaluate(model: ToyModel, n_samples: int | None = None, seed: int | None = None) -> np.ndarray:
    """Per-instance loss (inst,) on fresh samples (the same draws for every instance)."""
    cfg = model.cfg
    n_samples = cfg.eval_samples if n_samples is None else n_samples
    gen = torch.Generator(device=model.device).manual_seed(stream_seed(cfg.seed if seed is None else seed, "toy:eval"))
    B = min(cfg.batch_size * 4, n_samples)
    total, done = torch.zeros(cfg.n_instances, device=model.device), 0
    with cpu_threads(model.device, cfg.n_instances * cfg.n_features * B):
        while done < n_samples:
            total += model.loss(model.sample(B, gen)) * B
            done += B
    return (total / done).cpu().numpy()


def train(model: ToyModel, progress: bool = True, desc: str = "toy models") -> TrainLog:
    """Train every instance of ``model`` in place with Adam; return the log.

    Raises ``NonFiniteLossError`` naming the instance and step if a loss becomes NaN or inf
    (checked on logging steps).
    """
    cfg, dev = model.cfg, model.device
    opt = adam(model.parameters(), cfg.lr)
    sched = scheduler(opt, cfg.lr_schedule, cfg.steps)
    gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.seed, "toy:data"))
    loss_fn = loss_function(model)
    rows, losses = [], []
    t0 = time.perf_counter()
    with cpu_threads(dev, cfg.n_instances * cfg.n_features * cfg.batch_size):
        for step in tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=0.5):
            x = model.sample(cfg.batch_size, gen)  # (inst, batch, n)
            loss = loss_fn(x)  # (inst,)
            loss.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                check_finite(loss, step, desc)
                rows.append(step)
                losses.append(loss.detach())
    seconds = time.perf_counter() - t0
    return TrainLog(np.array(rows), torch.stack(losses).cpu().numpy(), evaluate(model), seconds)
