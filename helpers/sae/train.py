"""Training a stack of SAEs: Adam on ``sae.loss``, a log of what happened, and the checks
that stop a run the moment it goes wrong (NaN losses, a sample function of the wrong shape)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import check_int, stream_seed
from helpers.optim import NonFiniteLossError, adam, check_finite, scheduler
from helpers.sae.fused import resolve_matmul_dtype, step_matmul_dtype
from helpers.sae.model import SAE
from helpers.sae.resample import redundant, resample_latents_


@dataclass
class TrainLog:
    """What happened during training; each row averages ``log_every`` steps."""

    l1_coeffs: tuple[float, ...]
    """alpha of each instance (the columns of the per-instance arrays)."""
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(rows,) the last step of each window."""
    recon_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) mean (1/h)||x - x_hat||^2."""
    l1_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) mean sparsity term (with its coefficient)."""
    l0: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) mean number of active latents per example."""
    dead: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) latents that fired in none of the last dead_window batches."""
    steps_since_fired: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(inst, d_sae) at the end of training."""
    seconds: float = 0.0
    """Wall-clock time of the training loop."""
    examples: int = 0
    """Examples seen by each instance (steps x batch size)."""

    def final(self) -> dict[str, np.ndarray]:
        """Per-instance values of the last logged window."""
        if not len(self.steps):
            raise ValueError("this training log has no rows: the run trained 0 steps, so there is no last window; "
                             "train with steps >= 1 (the config's steps, or train_sae(..., steps=...))")
        return {"recon_loss": self.recon_loss[-1], "l1_loss": self.l1_loss[-1],
                "l0": self.l0[-1], "dead": self.dead[-1]}


def train_sae(
    sae: SAE,
    sample_fn: Callable[[int], torch.Tensor],
    steps: int | None = None,
    progress: bool = True,
    prefetch: int = 16,
    desc: str = "training SAEs",
    on_log: Callable[[int, SAE], None] | None = None,
) -> TrainLog:
    """Train every instance of ``sae`` with Adam on batches from ``sample_fn(n) -> (n, d_in)``.

    All instances see the same batches (so an L1 sweep compares like with like).
    ``prefetch`` batches are drawn per call to ``sample_fn`` to amortise its overhead.
    With ``decoder_bias``, b_dec starts at the mean of the first batches.
    The trainer keeps the record of when each latent last fired (the log's dead latents and
    ``steps_since_fired``); with ``cfg.auxk`` set, the forward pass gets it on every step.
    ``on_log(step, sae)`` is called at every logged step (each ``cfg.log_every`` steps and the
    last), to measure what the log does not (MMCS with the true features, say) as training goes.
    """
    cfg = sae.cfg
    steps = cfg.steps if steps is None else steps
    check_int("steps", steps, 0)
    check_int("prefetch", prefetch, 1)  # batches drawn per call to sample_fn
    B, I, J, dev = cfg.batch_size, cfg.n_instances, cfg.d_sae, sae.device
    opt = adam(sae.parameters(), cfg.lr)
    sched = scheduler(opt, cfg.lr_schedule, steps) if cfg.lr_schedule != "constant" else None
    forward = torch.compile(sae) if cfg.compile else sae
    noise_gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.seed, "sae-input-noise"))
    resample_gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.seed, "sae-resample"))
    labels = [f"alpha={a:g}" for a in cfg.l1_coeffs]
    record = cfg.auxk is not None  # AuxK reads the firing record (SAEConfig allows auxk only where a class takes it)
    rs = cfg.resample              # revive useless latents as training goes (a ResampleConfig), or None
    sae.train()

    last_fired = torch.zeros(I, J, dtype=torch.long, device=dev)  # step each latent last fired
    fires = torch.zeros(I, J, device=dev)                         # firings since the last resampling
    sums = torch.zeros(3, I, device=dev)  # recon, sparsity, l0 summed over the window
    rows: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    buffer, start, t0 = torch.empty(0), 0, time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    # bfloat16 products where the CPU has them (SAEConfig.matmul_dtype), in training only
    with step_matmul_dtype(resolve_matmul_dtype(cfg.matmul_dtype, dev)):
        for step in bar:
            if start >= buffer.shape[0]:
                buffer, start = _draw(sample_fn, B * prefetch, cfg.d_in, dev), 0
                if step == 0 and cfg.decoder_bias:
                    with torch.no_grad():
                        sae.b_dec.copy_(buffer.mean(0).expand_as(sae.b_dec))
            x = buffer[start : start + B]                                          # (B, h)
            start += B
            x_in = x + cfg.input_noise_std * torch.randn(x.shape, device=dev, generator=noise_gen) if cfg.input_noise_std else x

            if record:                           # batches since each latent last fired, before this one
                out = forward(x_in, target=x, steps_since_fired=step - last_fired)
            else:
                out = forward(x_in, target=x)    # out.loss = sae.loss(x_in, target=x).sum()
            out.loss.backward()                  # instances do not interact: each gets its own gradient
            opt.step()
            opt.zero_grad(set_to_none=True)
            if sched is not None:
                sched.step()
            if cfg.renorm_decoder:
                sae.renormalize_decoder_()       # keep the stored rows at unit length (see SAEConfig)

            with torch.no_grad():
                acts = out.acts                                                    # (I, B, J), c >= 0
                last_fired.masked_fill_(acts.amax(1) > 0, step + 1)                # fired in this batch
                l0 = torch.count_nonzero(acts, dim=(1, 2)) / acts.shape[1]         # (I,) mean active per example
                sums += torch.stack([out.recon_loss.detach(), out.l1_loss.detach(), l0])
                if rs is not None:
                    fires += (acts > 0).sum(1)
                    done = step + 1  # every rs.every steps, from rs.dead_after to rs.until of the run
                    if done % rs.every == 0 and rs.dead_after <= done <= rs.until * steps:
                        bad = ((step + 1 - last_fired) >= rs.dead_after) | redundant(sae.W_dec, fires, rs.duplicate_cos)
                        if bad.any():  # a pool of fresh samples to aim at (2048: the refit costs 20 passes)
                            resample_latents_(opt, sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec,
                                              _draw(sample_fn, 2048, cfg.d_in, dev), bad, rs.to,
                                              generator=resample_gen)
                        fires.zero_()
                if step == 0:
                    start_loss = (out.recon_loss + out.l1_loss).detach()             # (I,) the loss at initialisation
                if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                    # The window's sums hold every step since the last row: one NaN anywhere shows.
                    check_finite(sums[0] + sums[1], step + 1, "train_sae", labels)
                    check_not_diverged((sums[0] + sums[1]) / ((step % cfg.log_every) + 1), start_loss, step + 1, labels)
                    window = (step % cfg.log_every) + 1
                    dead = ((step + 1 - last_fired) >= cfg.dead_window).sum(-1)
                    rows.append((step + 1, (sums / window).cpu(), dead.cpu()))
                    sums.zero_()
                    if on_log is not None:
                        on_log(step + 1, sae)
                    if progress:
                        r = rows[-1][1]
                        bar.set_postfix(recon=f"{float(r[0].mean()):.3g}", l0=f"{float(r[2].mean()):.1f}")
        bar.close()
    log = TrainLog(l1_coeffs=cfg.l1_coeffs, seconds=time.perf_counter() - t0, examples=steps * B)
    if rows:
        log.steps = np.array([r[0] for r in rows])
        stacked = torch.stack([r[1] for r in rows]).numpy()  # (rows, 3, I)
        log.recon_loss, log.l1_loss, log.l0 = stacked[:, 0], stacked[:, 1], stacked[:, 2]
        log.dead = torch.stack([r[2] for r in rows]).numpy()
    log.steps_since_fired = (steps - last_fired).cpu().numpy()
    return log


class DivergedError(NonFiniteLossError):
    """Training ran away without a NaN: some instance's loss grew far above its start."""


DIVERGED_FACTOR = 1e3
"""A window's mean loss this many times the loss at initialisation counts as diverged (an SAE's
loss falls from its start; even a dictionary that dies stays near the data's variance)."""


def check_not_diverged(window_loss: torch.Tensor, start_loss: torch.Tensor, step: int, labels=None) -> None:
    """Raise ``DivergedError`` if any instance's mean loss over the window exceeds
    ``DIVERGED_FACTOR`` times its loss at step 1 (NaN is ``check_finite``'s job)."""
    bad = window_loss > DIVERGED_FACTOR * start_loss.clamp_min(1e-12)
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0])
    name = f"{i}" + (f" ({labels[i]})" if labels is not None else "")
    raise DivergedError(
        f"train_sae: the loss of instance {name} grew from {float(start_loss[i]):.3g} at step 1 to "
        f"{float(window_loss[i]):.3g} by step {step} ({int(bad.sum())} instance(s) over {DIVERGED_FACTOR:g}x their start): "
        "training diverged. The learning rate is too large for this problem: try a 10x smaller lr.")


def _draw(sample_fn: Callable[[int], torch.Tensor], n: int, d_in: int, dev: torch.device) -> torch.Tensor:
    batch = sample_fn(n).to(dev)
    if batch.dim() != 2 or batch.shape[1] != d_in:
        raise ValueError(f"sample_fn must return (n, {d_in}) activations, got {tuple(batch.shape)}")
    if batch.shape[0] == 0:
        raise ValueError(f"sample_fn({n}) returned an empty batch (0 rows of {d_in}): it must return rows to "
                         "train on (up to n); check that its data source is not exhausted or empty")
    return batch
