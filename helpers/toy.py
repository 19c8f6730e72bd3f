"""Toy models of superposition, many at once.

One ``ToyModel`` holds ``n_instances`` independent models ``x' = f(W^T W x + b)`` stacked
along a leading instance dimension (W: (inst, d_hidden, n_features), b: (inst, n_features)),
so a whole sweep (density x importance x seed) trains as one batch of tensors. The readout
``f`` is one of

* ``relu``: the paper's model, trained on importance-weighted squared error;
* ``linear``: no nonlinearity (same loss): a model that cannot filter interference;
* ``softmax``: the logits ``W^T W x + b`` go through a softmax and are trained with
  cross-entropy against the input itself, normalised to a distribution, ``t = x / sum(x)``.
  This asks the same question as the reconstruction task ("which features are on, and in
  what proportion?") in the only form a softmax can answer, with no extra labels. For the
  sparse inputs where superposition matters, one feature is on and ``t`` is one-hot, so it
  is also "classify which feature is active". A sample with no active feature has no
  distribution to predict and contributes nothing. Feature i's term is weighted by its
  importance, as in the squared error.

The sweeps the notebook draws are functions here too: ``sweep`` (importance decay x density,
best of several seeds), ``phase_diagram`` (one extra feature), ``dimensionality_sweep`` (many
features, fractional dimensions), ``pair_experiment`` (correlated / anticorrelated pairs) and
``abs_sweep`` (computing |x| in superposition, plain autograd since it is small and optional).

Why it is fast: a model this small spends almost all of a plain training step in Python and
kernel-launch overhead. Here the step is a handful of batched matrix products over all
instances, gradients are written out by hand (a test checks them against autograd), Adam is
a few in-place ops on one flat parameter buffer, every per-step tensor lives in a buffer
allocated once, and activations are laid out (inst, feature, batch) so the batched products
have one long dimension. The random numbers that make a batch are drawn once, shape
(n_features, batch), and shared by every instance (each instance thresholds them with its own
probabilities): torch's CPU random generator costs more than the whole rest of the step, and
each instance still sees correctly distributed data. Instances with the same probabilities
therefore see the same batches, which is what "several seeds per setting" wants: the seeds
differ only in their initialisation and are compared on the same data.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, fields, replace
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import get_device

READOUTS = ("relu", "linear", "softmax")
LR_SCHEDULES = ("cosine", "linear", "constant")


def _stream_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream, so init and data never share random numbers."""
    digest = hashlib.blake2b(f"toy:{stream}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _per_instance(value, name: str, n_instances: int, n_features: int) -> torch.Tensor:
    """``value`` broadcast to a float (inst, n_features) tensor, or a clear error."""
    t = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
    try:
        return t.broadcast_to((n_instances, n_features)).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, which does not broadcast to (n_instances, n_features) "
            f"= ({n_instances}, {n_features}). Pass a number, a ({n_features},) tensor (one value per "
            f"feature), an ({n_instances}, 1) tensor (one value per instance) or the full shape."
        ) from None


@dataclass
class ToyConfig:
    """A stack of toy models and how to train them (tensors are (inst, n_features) after init)."""

    n_features: int = 5
    """n: input features."""
    d_hidden: int = 2
    """m: hidden dimensions (the bottleneck)."""
    n_instances: int = 1
    """Models trained side by side."""
    feature_probability: float | Sequence | torch.Tensor = 0.05
    """Density 1 - S: chance that a feature is on; broadcast to (inst, n_features)."""
    importance: float | Sequence | torch.Tensor = 1.0
    """Weight of each feature in the loss; broadcast to (inst, n_features)."""
    readout: str = "relu"
    """relu (the paper's), linear (no filtering) or softmax (cross-entropy on x / sum(x))."""
    n_correlated_pairs: int = 0
    """The first 2k features form k pairs that are always on together (values independent)."""
    n_anticorrelated_pairs: int = 0
    """The next 2k features form k pairs that are never on together."""
    steps: int = 3000
    """Adam steps."""
    batch_size: int = 1024
    """Samples per step (every instance sees its own thresholding of the same draws)."""
    lr: float = 3e-2
    """Peak Adam learning rate (3e-2: at 1e-2 the dense 5-in-2 models are still turning
    their third feature off after a few thousand steps)."""
    lr_schedule: str = "cosine"
    """cosine (decay to 0, converges reliably), linear, or constant."""
    seed: int = 0
    """Seeds the initialisation and the data stream."""
    device: str | None = None
    """Where to train (None: ``get_device()``)."""
    log_every: int = 50
    """Steps between rows of the loss log."""
    eval_samples: int = 32_768
    """Fresh samples for the final per-instance loss."""

    def __post_init__(self) -> None:
        n, I = self.n_features, self.n_instances
        if n < 1 or self.d_hidden < 1 or I < 1:
            raise ValueError(f"n_features, d_hidden and n_instances must be positive, got {n}, {self.d_hidden}, {I}")
        if self.readout not in READOUTS:
            raise ValueError(f"Unknown readout {self.readout!r}: use one of {', '.join(READOUTS)}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_schedule {self.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}.")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.log_every < 1 or self.eval_samples < 1:
            raise ValueError("steps must be >= 0; batch_size, lr, log_every and eval_samples positive")
        n_paired = 2 * (self.n_correlated_pairs + self.n_anticorrelated_pairs)
        if min(self.n_correlated_pairs, self.n_anticorrelated_pairs) < 0 or n_paired > n:
            raise ValueError(f"{n_paired} features in pairs, but only n_features={n}")
        p = _per_instance(self.feature_probability, "feature_probability", I, n)
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"feature_probability must lie in [0, 1], got values from {p.min():.3g} to {p.max():.3g}")
        a0 = 2 * self.n_correlated_pairs
        if self.n_anticorrelated_pairs and (p[:, a0:n_paired:2] + p[:, a0 + 1 : n_paired : 2]).max() > 1:
            raise ValueError("an anticorrelated pair's two probabilities must add up to at most 1")
        imp = _per_instance(self.importance, "importance", I, n)
        if imp.min() < 0:
            raise ValueError("importance must be non-negative")
        self.feature_probability, self.importance = p, imp

    def select(self, idx) -> "ToyConfig":
        """The config of the instances ``idx`` (an int, slice, list or index tensor)."""
        idx = torch.arange(self.n_instances)[idx].reshape(-1)
        return replace(self, n_instances=len(idx), feature_probability=self.feature_probability[idx],
                       importance=self.importance[idx])

    def as_dict(self) -> dict:
        """JSON-able settings (for cache keys)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "device"}
        out["feature_probability"] = self.feature_probability.tolist()
        out["importance"] = self.importance.tolist()
        return out


class ToyModel:
    """``cfg.n_instances`` toy models; W (inst, d_hidden, n_features), b (inst, n_features)."""

    def __init__(self, cfg: ToyConfig, W: torch.Tensor | None = None, b: torch.Tensor | None = None):
        self.cfg = cfg
        dev = get_device(cfg.device)
        I, m, n = cfg.n_instances, cfg.d_hidden, cfg.n_features
        if W is None:  # Xavier-normal init, drawn on the CPU so every device starts the same
            gen = torch.Generator().manual_seed(_stream_seed(cfg.seed, "init"))
            W = torch.randn(I, m, n, generator=gen) * math.sqrt(2.0 / (m + n))
        if b is None:
            b = torch.zeros(I, n)
        if tuple(W.shape) != (I, m, n) or tuple(b.shape) != (I, n):
            raise ValueError(f"W must be {(I, m, n)} and b {(I, n)}, got {tuple(W.shape)} and {tuple(b.shape)}")
        self.W = W.detach().to(dev, torch.float32).clone()  # (inst, m, n)
        self.b = b.detach().to(dev, torch.float32).clone()  # (inst, n)
        self.feature_probability = cfg.feature_probability.to(dev)  # (inst, n)
        self.importance = cfg.importance.to(dev)  # (inst, n)

    @property
    def device(self) -> torch.device:
        return self.W.device

    def select(self, idx) -> "ToyModel":
        """A copy of the instances ``idx`` as a model of their own."""
        cfg = self.cfg.select(idx)
        idx = torch.arange(self.cfg.n_instances)[idx].reshape(-1).to(self.device)
        return ToyModel(cfg, self.W[idx], self.b[idx])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (inst, batch, n) -> output (inst, batch, n): reconstruction, or probabilities (softmax)."""
        return readout_fn(self.cfg.readout)(logits(self.W, self.b, x))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of inputs, (inst, batch, n), drawn on the model's device."""
        draw = _Sampler(self.cfg, self.feature_probability, batch_size, keep_buffers=False)
        return draw(generator).transpose(1, 2)


# --------------------------------------------------------------------------------------
# The model as plain functions (autograd-friendly reference, used by tests and benchmarks)
# --------------------------------------------------------------------------------------
def logits(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W^T W x + b for x (inst, batch, n): (inst, batch, n)."""
    h = torch.einsum("imn,ibn->ibm", W, x)  # (inst, batch, m): the hidden representation
    return torch.einsum("imn,ibm->ibn", W, h) + b[:, None, :]


def readout_fn(readout: str):
    if readout not in READOUTS:
        raise ValueError(f"Unknown readout {readout!r}: use one of {', '.join(READOUTS)}.")
    return {"relu": torch.relu, "linear": lambda z: z, "softmax": lambda z: torch.softmax(z, -1)}[readout]


def toy_loss(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor, readout: str) -> torch.Tensor:
    """Per-instance loss (inst,) of a batch x (inst, batch, n); differentiable.

    relu / linear: sum_i I_i (x_i - x'_i)^2, averaged over the batch (the paper's loss up to a
    constant). softmax: -sum_i I_i t_i log p_i with t = x / sum(x), averaged over the batch
    (samples with no active feature have t = 0).
    """
    z = logits(W, b, x)
    imp = importance[:, None, :]  # (inst, 1, n)
    if readout == "softmax":
        t = x / x.sum(-1, keepdim=True).clamp_min(1e-12)
        return -(imp * t * torch.log_softmax(z, -1)).sum(-1).mean(-1)
    return (imp * (readout_fn(readout)(z) - x) ** 2).sum(-1).mean(-1)


# --------------------------------------------------------------------------------------
# Data: shared uniform draws, thresholded per instance
# --------------------------------------------------------------------------------------
class _Sampler:
    """Draws batches x (inst, n, batch) for one stack; buffers are reused when ``batch`` is fixed.

    The uniforms are drawn once per batch, shape (n, batch), and every instance thresholds
    them with its own probabilities. u lies in (0, 1]; feature i is on when u_i <= p_i.
    Independent features take the value 1 - u_i / p_i, which is uniform(0, 1] given that
    the feature is on, so one draw decides both whether and how much. Features in pairs need
    a second draw v for their values, since partners share u.
    """

    def __init__(self, cfg: ToyConfig, p: torch.Tensor, batch: int, keep_buffers: bool = True):
        self.cfg, self.B = cfg, batch
        self.paired = 2 * (cfg.n_correlated_pairs + cfg.n_anticorrelated_pairs)
        dev, (I, n) = p.device, p.shape
        if not self.paired:
            self.q = (1.0 / p)[..., None]  # (I, n, 1); p = 0 gives inf, and 1 - u * inf < 0: never on
        else:  # feature i is on when lo_i < u_i <= hi_i
            a0, a1 = 2 * cfg.n_correlated_pairs, self.paired
            lo, hi = torch.zeros_like(p), p.clone()
            # An anticorrelated pair (j, j+1) reads one u: j is on for u <= p_j, j+1 for p_j < u <= p_j + p_j+1.
            lo[:, a0 + 1 : a1 : 2] = p[:, a0:a1:2]
            hi[:, a0 + 1 : a1 : 2] += p[:, a0:a1:2]
            self.lo, self.hi = lo[..., None], hi[..., None]
        self.buf = None
        if keep_buffers:
            self.buf = dict(u=torch.empty(n, batch, device=dev), v=torch.empty(n, batch, device=dev),
                            x=torch.empty(I, n, batch, device=dev),
                            mask=torch.empty(I, n, batch, dtype=torch.bool, device=dev) if self.paired else None)

    def __call__(self, generator: torch.Generator | None) -> torch.Tensor:
        n, B, buf = self.cfg.n_features, self.B, self.buf or {}
        dev = (self.q if not self.paired else self.hi).device
        u = torch.rand(n, B, device=dev, generator=generator, out=buf.get("u"))
        u.neg_().add_(1.0)  # (0, 1]
        if not self.paired:
            x = torch.addcmul(_ONE.to(dev), u, self.q, value=-1.0, out=buf.get("x"))  # 1 - u / p
            return x.clamp_min_(0.0)
        v = torch.rand(n, B, device=dev, generator=generator, out=buf.get("v"))
        u[1 : self.paired : 2] = u[0 : self.paired : 2]  # partners share the draw that switches them on
        mask = torch.le(u, self.hi, out=buf.get("mask"))  # (I, n, B)
        if self.cfg.n_anticorrelated_pairs:
            mask &= u > self.lo
        x = buf.get("x")
        return torch.mul(mask, v) if x is None else x.copy_(mask).mul_(v)


_ONE = torch.ones(())


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
def _mm(A: torch.Tensor, X: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """A (I, 1 or k, l) @ X (I, l, B) into out. One-row products are far faster as a
    multiply-and-sum than as bmm on a CPU (the d_hidden = 1 phase diagram is all of them)."""
    if A.shape[1] == 1:
        return torch.sum(torch.mul(A.transpose(1, 2), X, out=tmp), 1, keepdim=True, out=out)
    return torch.bmm(A, X, out=out)


def _mm_t(H: torch.Tensor, X: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """H (I, k, B) @ X (I, l, B)^T into out (I, k, l): a sum over the batch."""
    if H.shape[1] == 1:
        torch.sum(torch.mul(H, X, out=tmp), -1, out=out.view(out.shape[0], -1))
        return out
    return torch.bmm(H, X.transpose(1, 2), out=out)


class _Step:
    """Buffers and the hand-written forward/backward for one stacked model (layout (inst, n, batch))."""

    def __init__(self, model: ToyModel, batch: int):
        cfg, dev = model.cfg, model.device
        I, m, n, B = cfg.n_instances, cfg.d_hidden, cfg.n_features, batch
        self.cfg, self.model, self.B = cfg, model, B
        self.data = _Sampler(cfg, model.feature_probability, B)
        self.z, self.d, self.tmp = (torch.empty(I, n, B, device=dev) for _ in range(3))
        self.h, self.g = torch.empty(I, m, B, device=dev), torch.empty(I, m, B, device=dev)
        self.Ws, self.gW2 = torch.empty(I, m, n, device=dev), torch.empty(I, m, n, device=dev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fill self.h = W x (I, m, B) and self.z = W^T h + b (I, n, B); return z."""
        W, b, z = self.model.W, self.model.b, self.z
        _mm(W, x, self.h, self.tmp)
        if self.cfg.d_hidden == 1:  # an outer product
            return torch.addcmul(b[..., None], W.transpose(1, 2), self.h, out=z)
        return torch.baddbmm(b[..., None], W.transpose(1, 2), self.h, out=z)

    def loss(self, x: torch.Tensor, forward: bool = True) -> torch.Tensor:
        """Per-instance loss (inst,) of x (inst, n, batch) under the current weights."""
        z = self.forward(x) if forward else self.z
        imp = self.model.importance[..., None]  # (I, n, 1)
        if self.cfg.readout == "softmax":
            t = x / x.sum(1, keepdim=True).clamp_min(1e-12)
            return -(imp * t * torch.log_softmax(z, 1)).sum(1).mean(-1)
        out = z.clamp_min(0) if self.cfg.readout == "relu" else z
        return (imp * (out - x).square_()).sum(1).mean(-1)

    def grads(self, x: torch.Tensor, gW: torch.Tensor, gb: torch.Tensor, with_loss: bool) -> torch.Tensor | None:
        """Write d(sum of per-instance losses)/d(W, b) into gW (I, m, n), gb (I, n)."""
        W, d, B = self.model.W, self.d, self.B
        imp = self.model.importance  # (I, n)
        z = self.forward(x)
        loss = self.loss(x, forward=False) if with_loss else None
        if self.cfg.readout == "softmax":
            # d/dz of -sum_i I_i t_i log p_i is p * sum_i(I_i t_i) - I t, all divided by B.
            ct = x / x.sum(1, keepdim=True).clamp_min(1e-12) * imp[..., None]
            d.copy_(torch.softmax(z, 1))
            d.mul_(ct.sum(1, keepdim=True)).sub_(ct)
            scale = torch.full_like(imp, 1.0 / B)  # (I, n)
        else:
            torch.sub(z, x, out=d)  # error of the logits
            if self.cfg.readout == "relu":  # no gradient where the ReLU is off
                torch.ops.aten.threshold_backward.grad_input(d, z, 0.0, grad_input=d)
            # The importance weights and 2/B multiply feature columns, so they are applied to
            # the small (inst, m, n) tensors below instead of to the big (inst, n, B) one.
            scale = imp * (2.0 / B)
        scale3 = scale[:, None, :]  # (I, 1, n)
        # z = W^T h + b with h = W x, so dL/dW = h d^T + (W d) x^T (d scaled per feature).
        torch.mul(W, scale3, out=self.Ws)
        _mm(self.Ws, d, self.g, self.tmp)  # (I, m, B) = W diag(scale) d
        _mm_t(self.h, d, gW, self.tmp).mul_(scale3)
        gW.add_(_mm_t(self.g, x, self.gW2, self.tmp))
        torch.sum(d, -1, out=gb)
        gb.mul_(scale)
        return loss


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


def _lr_factor(schedule: str, step: int, steps: int) -> float:
    if schedule == "constant":
        return 1.0
    frac = step / max(steps, 1)
    return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


_THREADED_WORK = 1 << 23
"""Per-step elements (inst x n x batch) above which a CPU run keeps torch's thread pool."""


@contextlib.contextmanager
def _cpu_threads(device: torch.device, work: int):
    """One CPU thread for small stacks. A step of a toy stack is many tiny ops; with two threads,
    each op waits for the other thread, and on a busy machine (other jobs on the same cores) that
    wait is a scheduler time slice: a sweep measured 100x slower. One thread loses little when idle."""
    if device.type != "cpu" or work > _THREADED_WORK:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def evaluate(model: ToyModel, n_samples: int | None = None, seed: int | None = None) -> np.ndarray:
    """Per-instance loss (inst,) on fresh samples (the same draws for every instance)."""
    cfg = model.cfg
    n_samples = cfg.eval_samples if n_samples is None else n_samples
    gen = torch.Generator(device=model.device).manual_seed(_stream_seed(cfg.seed if seed is None else seed, "eval"))
    step = _Step(model, min(cfg.batch_size * 4, n_samples))
    total, done = torch.zeros(cfg.n_instances, device=model.device), 0
    while done < n_samples:
        total += step.loss(step.data(gen)) * step.B
        done += step.B
    return (total / done).cpu().numpy()


@torch.no_grad()
def train(model: ToyModel, progress: bool = True, desc: str = "toy models") -> TrainLog:
    """Train every instance of ``model`` in place with Adam; return the log."""
    cfg, dev = model.cfg, model.device
    I, m, n = cfg.n_instances, cfg.d_hidden, cfg.n_features
    # W and b become views of one flat buffer, so Adam is a few ops on one tensor.
    nW = I * m * n
    params = torch.cat([model.W.reshape(-1), model.b.reshape(-1)])
    model.W, model.b = params[:nW].view(I, m, n), params[nW:].view(I, n)
    grads = torch.zeros_like(params)
    gW, gb = grads[:nW].view(I, m, n), grads[nW:].view(I, n)

    with _cpu_threads(dev, I * n * cfg.batch_size):
        return _train_loop(model, params, grads, gW, gb, progress, desc)


def _train_loop(model, params, grads, gW, gb, progress: bool, desc: str) -> TrainLog:
    cfg, dev, I = model.cfg, model.device, model.cfg.n_instances
    m1, m2, denom = torch.zeros_like(params), torch.zeros_like(params), torch.zeros_like(params)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step_fn = _Step(model, cfg.batch_size)
    gen = torch.Generator(device=dev).manual_seed(_stream_seed(cfg.seed, "data"))
    rows, losses = [], []
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=0.5):
        x = step_fn.data(gen)
        log_now = step % cfg.log_every == 0 or step == cfg.steps - 1
        loss = step_fn.grads(x, gW, gb, with_loss=log_now)
        if log_now:
            rows.append(step)
            losses.append(loss)
        # Adam, by hand on the flat buffer (the same update as torch.optim.Adam).
        t = step + 1
        lr = cfg.lr * _lr_factor(cfg.lr_schedule, step, cfg.steps)
        m1.lerp_(grads, 1 - beta1)
        m2.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        torch.sqrt(m2, out=denom).div_(math.sqrt(1 - beta2**t)).add_(eps)
        params.addcdiv_(m1, denom, value=-lr / (1 - beta1**t))
    seconds = time.perf_counter() - t0
    loss_rows = torch.stack(losses).cpu().numpy() if losses else np.zeros((0, I))
    return TrainLog(np.array(rows), loss_rows, evaluate(model), seconds)


# --------------------------------------------------------------------------------------
# Several seeds per setting, keep the best (toy models have local minima)
# --------------------------------------------------------------------------------------
class BestOfSeeds(NamedTuple):
    """Per-setting winners of a stacked (setting, seed) run."""

    W: torch.Tensor
    """(settings, m, n) weights of the lowest-loss seed of each setting."""
    b: torch.Tensor
    """(settings, n) its bias."""
    loss: np.ndarray
    """(settings,) its final loss."""
    seed_loss: np.ndarray
    """(settings, seeds) final loss of every seed."""
    best_seed: np.ndarray
    """(settings,) index of the winning seed."""
    cfg: ToyConfig
    """The per-setting config (one instance per setting)."""
    log: TrainLog
    """The log of the whole stacked run (instances laid out setting-major: (setting, seed))."""


def best_of_seeds(cfg: ToyConfig, n_seeds: int, progress: bool = True, desc: str = "toy models") -> BestOfSeeds:
    """Train ``n_seeds`` copies of every setting (instance) of ``cfg`` as one stack; keep the best.

    The stack's instances are laid out (setting, seed): instance ``s * n_seeds + k`` is seed
    k of setting s. All seeds of a setting see the same batches, so their final losses are
    compared on equal terms, and the lowest wins, as the paper does.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    S = cfg.n_instances
    model = ToyModel(cfg.select(torch.arange(S).repeat_interleave(n_seeds)))
    log = train(model, progress=progress, desc=desc)
    seed_loss = log.final_loss.reshape(S, n_seeds)
    best = seed_loss.argmin(1)
    pick = torch.as_tensor(np.arange(S) * n_seeds + best, device=model.device)
    return BestOfSeeds(model.W[pick].cpu(), model.b[pick].cpu(), seed_loss[np.arange(S), best],
                       seed_loss, best, cfg, log)


# --------------------------------------------------------------------------------------
# Reading the geometry of W
# --------------------------------------------------------------------------------------
def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """||W_i|| per feature: (..., m, n) -> (..., n). Near 1: represented; near 0: dropped."""
    return W.norm(dim=-2)


def interference(W: torch.Tensor) -> torch.Tensor:
    """(W_i_hat . W_j)^2 for every pair: (..., m, n) -> (..., n, n), zero diagonal."""
    W_hat = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    sq = (W_hat.transpose(-1, -2) @ W) ** 2
    return sq * (1 - torch.eye(W.shape[-1], device=W.device))


def superposition(W: torch.Tensor) -> torch.Tensor:
    """sum_{j != i} (W_i_hat . W_j)^2 per feature, (..., n): how much others share feature i's direction."""
    return interference(W).sum(-1)


def feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    """D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 (j including i), (..., n); 0 for a dropped feature.

    1: the feature has a dimension to itself; 1/2: it shares one with an antipodal partner;
    2/5: a pentagon's vertex; and so on.
    """
    norms2 = W.norm(dim=-2) ** 2
    return torch.where(norms2 > 1e-6, norms2 / (norms2 + superposition(W)).clamp_min(1e-12), torch.zeros_like(norms2))


def n_represented(W: torch.Tensor, threshold: float = 0.5, relative: bool = False) -> torch.Tensor:
    """Features with ||W_i|| > threshold (relative=True: > threshold * the largest norm), (...)."""
    norms = feature_norms(W)
    if relative:
        norms = norms / norms.amax(-1, keepdim=True).clamp_min(1e-12)
    return (norms > threshold).sum(-1)


class Polygon(NamedTuple):
    """The shape that the represented columns of a 2-D W make."""

    n_vertices: int
    """Number of represented features (norm above the threshold)."""
    gaps_deg: np.ndarray
    """Angles between neighbouring represented features going round the circle (sum 360)."""
    regular: bool
    """Every gap within ``tol_deg`` of 360 / n_vertices (e.g. 72 for a pentagon)."""


def polygon(W: torch.Tensor, threshold: float = 0.5, tol_deg: float = 10.0, relative: bool = False) -> Polygon:
    """Which regular polygon, if any, the columns of one 2-D W (2, n) form."""
    if W.dim() != 2 or W.shape[0] != 2:
        raise ValueError(f"polygon() reads one instance with 2 hidden dimensions, W of shape (2, n); got {tuple(W.shape)}")
    W = W.detach().cpu().double()
    norms = feature_norms(W)
    keep = norms > threshold * (norms.max() if relative else 1.0)
    k = int(keep.sum())
    if k < 2:
        return Polygon(k, np.array([360.0]) if k else np.zeros(0), False)
    angles = np.sort(np.degrees(np.arctan2(W[1, keep].numpy(), W[0, keep].numpy())) % 360)
    gaps = np.diff(np.append(angles, angles[0] + 360))
    return Polygon(k, gaps, bool(np.all(np.abs(gaps - 360 / k) < tol_deg)))


# --------------------------------------------------------------------------------------
# The phase diagram for one extra feature
# --------------------------------------------------------------------------------------
PHASES = ("not represented", "dedicated dimension", "superposition")
"""Phase labels, indexed by the integers ``classify_extra_feature`` returns."""


def classify_extra_feature(W: torch.Tensor, norm_threshold: float = 0.5, sup_threshold: float = 0.2) -> torch.Tensor:
    """Phase of the last feature of each W (..., m, n): 0, 1 or 2 (see ``PHASES``).

    Not represented: ||W_extra|| below ``norm_threshold``. Otherwise superposition when the
    other features' squared projections on its direction add up to more than
    ``sup_threshold`` (an antipodal partner gives 1, a triangle's neighbours 0.5), else it has
    a dedicated dimension (orthogonal to everything else the model keeps).
    """
    norm = feature_norms(W)[..., -1]
    sup = superposition(W)[..., -1]
    return torch.where(norm < norm_threshold, 0, torch.where(sup > sup_threshold, 2, 1))


class PhaseDiagram(NamedTuple):
    """Best-of-seeds models on a (relative importance x density) grid."""

    densities: np.ndarray
    """(grid,) feature density 1 - S of every feature (x axis, log-spaced)."""
    rel_importance: np.ndarray
    """(grid,) importance of the extra feature relative to the others' 1 (y axis, log-spaced)."""
    phase: np.ndarray
    """(grid_importance, grid_density) ints indexing ``PHASES``."""
    extra_norm: np.ndarray
    """(grid_importance, grid_density) ||W_extra||."""
    extra_superposition: np.ndarray
    """(grid_importance, grid_density) sum_j (W_extra_hat . W_j)^2 over the other features."""
    W: torch.Tensor
    """(grid_importance, grid_density, m, n) the winning weights."""
    d_hidden: int
    n_models: int
    """Models trained (grid^2 x seeds)."""
    seconds: float


def phase_diagram(
    d_hidden: int = 1,
    grid: int = 20,
    n_seeds: int = 3,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 3e-2,
    density_range: tuple[float, float] = (0.01, 1.0),
    importance_range: tuple[float, float] = (0.1, 10.0),
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> PhaseDiagram:
    """``d_hidden + 1`` features in ``d_hidden`` dimensions, as one stack of grid^2 x n_seeds models.

    Every feature has the same density; the first ``d_hidden`` features have importance 1 and
    the extra (last) one a relative importance from ``importance_range``.
    """
    if grid < 2:
        raise ValueError(f"grid must be at least 2, got {grid}")
    n = d_hidden + 1
    dens = np.geomspace(*density_range, grid)
    rel = np.geomspace(*importance_range, grid)
    R, D = np.meshgrid(rel, dens, indexing="ij")  # (grid_imp, grid_dens)
    p = torch.as_tensor(D.reshape(-1, 1), dtype=torch.float32)
    imp = torch.ones(grid * grid, n)
    imp[:, -1] = torch.as_tensor(R.reshape(-1), dtype=torch.float32)
    cfg = ToyConfig(n_features=n, d_hidden=d_hidden, n_instances=grid * grid, feature_probability=p, importance=imp,
                    steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device, log_every=max(steps, 1))
    t0 = time.perf_counter()
    best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"phase diagram, {n} features in {d_hidden}-D")
    seconds = time.perf_counter() - t0
    W = best.W.reshape(grid, grid, d_hidden, n)
    return PhaseDiagram(dens, rel, classify_extra_feature(W).numpy(), feature_norms(W)[..., -1].numpy(),
                        superposition(W)[..., -1].numpy(), W, d_hidden, grid * grid * n_seeds, seconds)


# --------------------------------------------------------------------------------------
# Sweeps the notebook draws: density x importance decay, feature dimensionality, pairs
# --------------------------------------------------------------------------------------
def decay_importance(n_features: int, decay: float) -> torch.Tensor:
    """The paper's importance profile ``decay ** i``, (n_features,)."""
    return torch.as_tensor(decay, dtype=torch.float32) ** torch.arange(n_features, dtype=torch.float32)


class Sweep(NamedTuple):
    """Best-of-seeds models on a (importance decay x density) grid."""

    densities: np.ndarray
    """(n_densities,) feature density 1 - S (the same for every feature)."""
    decays: np.ndarray
    """(n_decays,) importance of feature i is ``decay ** i``."""
    W: torch.Tensor
    """(n_decays, n_densities, m, n) winning weights (CPU)."""
    b: torch.Tensor
    """(n_decays, n_densities, n) their biases."""
    loss: np.ndarray
    """(n_decays, n_densities) their final losses."""
    readout: str
    n_models: int
    """Models trained (grid x seeds)."""
    seconds: float


def sweep(
    densities: Sequence[float],
    decays: Sequence[float] = (0.9,),
    n_features: int = 5,
    d_hidden: int = 2,
    readout: str = "relu",
    n_seeds: int = 3,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> Sweep:
    """Every (decay, density) pair as one stack of ``len(decays) * len(densities) * n_seeds`` models.

    Importance ``decay ** i`` (feature 0 most important), every feature on with the same
    density. Each setting keeps its lowest-loss seed (toy models have local minima).
    """
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    dec = np.asarray(decays, dtype=np.float64).reshape(-1)
    if len(dens) == 0 or len(dec) == 0:
        raise ValueError("sweep() needs at least one density and one decay")
    if dec.min() <= 0:
        raise ValueError(f"importance decays must be positive, got {dec.min()}")
    D, K = np.meshgrid(dens, dec)  # (n_decays, n_densities)
    p = torch.as_tensor(D.reshape(-1, 1), dtype=torch.float32)
    imp = torch.stack([decay_importance(n_features, k) for k in K.reshape(-1)])
    cfg = ToyConfig(n_features=n_features, d_hidden=d_hidden, n_instances=p.shape[0], feature_probability=p,
                    importance=imp, readout=readout, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                    device=device, log_every=max(steps // 20, 1))
    t0 = time.perf_counter()
    best = best_of_seeds(cfg, n_seeds, progress=progress, desc=f"{n_features} features in {d_hidden}-D, {readout}")
    seconds = time.perf_counter() - t0
    shape = (len(dec), len(dens))
    return Sweep(dens, dec, best.W.reshape(*shape, d_hidden, n_features), best.b.reshape(*shape, n_features),
                 best.loss.reshape(shape), readout, p.shape[0] * n_seeds, seconds)


STICKY_FRACTIONS = {1.0: "1 (own dim)", 3 / 4: "3/4 (tetrahedron)", 2 / 3: "2/3 (triangle)",
                    1 / 2: "1/2 (digon)", 2 / 5: "2/5 (pentagon)", 3 / 8: "3/8 (square antiprism)"}
"""Feature dimensionalities of the uniform polytopes the paper finds, with their names."""


class Dimensionality(NamedTuple):
    """Many equally important features in few dimensions, one model per density."""

    densities: np.ndarray
    """(n_densities,) feature density 1 - S."""
    dims_per_feature: np.ndarray
    """(n_densities,) m / ||W||_F^2: hidden dimensions per (fully) represented feature."""
    feature_dim: np.ndarray
    """(n_densities, n_features) D_i of every feature (0: not represented)."""
    n_represented: np.ndarray
    """(n_densities,) features with ||W_i|| > 0.5."""
    W: torch.Tensor
    """(n_densities, m, n) trained weights."""


def dimensionality_sweep(
    densities: Sequence[float],
    n_features: int = 200,
    d_hidden: int = 20,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> Dimensionality:
    """The paper's feature-dimensionality experiment: importance 1 everywhere, one model per density."""
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    cfg = ToyConfig(n_features=n_features, d_hidden=d_hidden, n_instances=len(dens),
                    feature_probability=torch.as_tensor(dens, dtype=torch.float32)[:, None], importance=1.0,
                    steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                    log_every=max(steps // 20, 1), eval_samples=4096)
    model = ToyModel(cfg)
    train(model, progress=progress, desc=f"{n_features} features in {d_hidden}-D")
    W = model.W.cpu()
    return Dimensionality(dens, (d_hidden / W.square().sum((-1, -2))).numpy(), feature_dimensionality(W).numpy(),
                          n_represented(W).numpy(), W)


def partner_angles(W: torch.Tensor, n_pairs: int, first: int = 0) -> torch.Tensor:
    """Angle in degrees between the features of each pair (2k + first, 2k + first + 1): (..., n_pairs)."""
    a = W[..., first : first + 2 * n_pairs : 2]
    b = W[..., first + 1 : first + 2 * n_pairs : 2]
    cos = (a * b).sum(-2) / (a.norm(dim=-2) * b.norm(dim=-2)).clamp_min(1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


PAIR_KINDS = ("independent", "correlated", "anticorrelated")
"""How the two features of a pair co-occur: independently, always together, never together."""


class PairResult(NamedTuple):
    """Toy models whose features come in pairs, for several densities and kinds of pairing."""

    densities: np.ndarray
    """(n_densities,) density of every feature."""
    kinds: tuple[str, ...]
    """Entries of ``PAIR_KINDS``, one per row of the arrays below."""
    W: torch.Tensor
    """(kinds, n_densities, m, n) winning weights."""
    partner_angle: np.ndarray
    """(kinds, n_densities, n_pairs) angle in degrees between the two features of each pair."""
    n_represented: np.ndarray
    """(kinds, n_densities) features with norm above half the largest."""


def pair_experiment(
    densities: Sequence[float] = (0.1, 0.3),
    n_pairs: int = 2,
    d_hidden: int = 2,
    kinds: Sequence[str] = PAIR_KINDS,
    n_seeds: int = 6,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> PairResult:
    """2 * n_pairs equally important features whose pairs (0, 1), (2, 3), ... are independent,
    correlated (always on together) or anticorrelated (never on together); one stack per kind,
    all densities in it. Every feature is on with the same density (at most 0.5, so that an
    anticorrelated pair's two probabilities add up to at most 1)."""
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    bad = [k for k in kinds if k not in PAIR_KINDS]
    if bad:
        raise ValueError(f"Unknown pair kinds {bad}: use entries of {PAIR_KINDS}.")
    if dens.max() > 0.5:
        raise ValueError(f"densities must be at most 0.5 (anticorrelated partners share one draw), got {dens.max()}")
    Ws = []
    for kind in kinds:
        cfg = ToyConfig(n_features=2 * n_pairs, d_hidden=d_hidden, n_instances=len(dens),
                        feature_probability=torch.as_tensor(dens, dtype=torch.float32)[:, None], importance=1.0,
                        n_correlated_pairs=n_pairs if kind == "correlated" else 0,
                        n_anticorrelated_pairs=n_pairs if kind == "anticorrelated" else 0,
                        steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                        log_every=max(steps // 20, 1))
        Ws.append(best_of_seeds(cfg, n_seeds, progress=progress, desc=f"{kind} pairs").W)
    W = torch.stack(Ws)  # (kinds, densities, m, n)
    return PairResult(dens, tuple(kinds), W, partner_angles(W, n_pairs).numpy(),
                      n_represented(W, relative=True).numpy())


# --------------------------------------------------------------------------------------
# Computation in superposition: |x| through a hidden ReLU layer
# --------------------------------------------------------------------------------------
class AbsResult(NamedTuple):
    """Models computing y = |x| for n sparse inputs in [-1, 1] with m < n hidden ReLU neurons."""

    densities: np.ndarray
    """(n_densities,) density of every input."""
    W1: torch.Tensor
    """(n_densities, m, n) input -> neuron weights of the best seed."""
    W2: torch.Tensor
    """(n_densities, n, m) neuron -> output weights."""
    explained: np.ndarray
    """(n_densities, n) per feature 1 - E[(y_i - |x_i|)^2] / Var(|x_i|) on fresh samples: 1 computed
    exactly, about 0.5 only one sign (one ReLU), 0 not at all (a constant output)."""
    loss: np.ndarray
    """(n_densities,) importance-weighted loss of the best seed."""


def abs_sweep(
    densities: Sequence[float],
    n_features: int = 20,
    d_hidden: int = 10,
    decay: float = 0.9,
    n_seeds: int = 3,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-2,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> AbsResult:
    """The paper's absolute-value model ``y = ReLU(W2 ReLU(W1 x + b1) + b2)``, target ``|x|``.

    Inputs are uniform in [-1, 1] when on (so ``|x|`` needs two ReLUs per feature: ReLU(x) +
    ReLU(-x)); importance ``decay ** i``. One stack over (density, seed), trained with autograd
    and ``torch.optim.Adam`` (the model is small and this part is optional, so plain code wins).
    """
    dev = get_device(device)
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    n, m = n_features, d_hidden
    I = len(dens) * n_seeds
    p = torch.as_tensor(np.repeat(dens, n_seeds), dtype=torch.float32, device=dev)[:, None, None]  # (I, 1, 1)
    imp = decay_importance(n, decay).to(dev)  # (n,)
    gen = torch.Generator().manual_seed(_stream_seed(seed, "abs-init"))
    W1 = (torch.randn(I, m, n, generator=gen) * math.sqrt(2.0 / (m + n))).to(dev).requires_grad_()
    W2 = (torch.randn(I, n, m, generator=gen) * math.sqrt(2.0 / (m + n))).to(dev).requires_grad_()
    b1 = torch.zeros(I, m, 1, device=dev, requires_grad=True)
    b2 = torch.zeros(I, n, 1, device=dev, requires_grad=True)
    opt = torch.optim.Adam([W1, W2, b1, b2], lr=lr)
    data_gen = torch.Generator(device=dev).manual_seed(_stream_seed(seed, "abs-data"))

    def sample(B: int, g: torch.Generator) -> torch.Tensor:  # (I, n, B), shared draws as in _Sampler
        on = torch.rand(n, B, device=dev, generator=g) < p  # (I, n, B)
        return on * (2 * torch.rand(n, B, device=dev, generator=g) - 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(W2 @ torch.relu(W1 @ x + b1) + b2)  # (I, n, B)

    with _cpu_threads(dev, I * max(n, m) * batch_size):
        for step in tqdm(range(steps), desc="|x| models", disable=not progress, mininterval=0.5):
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor("cosine", step, steps)
            x = sample(batch_size, data_gen)
            loss = (imp[:, None] * (forward(x) - x.abs()) ** 2).sum(1).mean(-1)  # (I,)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    with torch.no_grad():
        eval_gen = torch.Generator(device=dev).manual_seed(_stream_seed(seed, "abs-eval"))
        x = sample(8 * batch_size, eval_gen)
        err = (forward(x) - x.abs()).square().mean(-1)  # (I, n)
        final = (imp * err).sum(-1).cpu().numpy().reshape(len(dens), n_seeds)
        # relative to the best constant output (the mean of |x|), which the bias gives for free
        explained = (1 - err / x.abs().var(-1).clamp_min(1e-12)).cpu().numpy().reshape(len(dens), n_seeds, n)
    best = final.argmin(1)
    pick = torch.as_tensor(np.arange(len(dens)) * n_seeds + best, device=dev)
    return AbsResult(dens, W1.detach()[pick].cpu(), W2.detach()[pick].cpu(),
                     explained[np.arange(len(dens)), best], final[np.arange(len(dens)), best])


def polysemantic_neurons(W1: torch.Tensor, rel: float = 0.3, floor: float = 0.3) -> torch.Tensor:
    """Neurons (rows of W1 (..., m, n)) with a weight above ``floor`` that also read at least one more
    feature with a weight above ``rel`` x their largest: (...,) counts."""
    w = W1.abs()
    top = w.amax(-1, keepdim=True)
    used = top.squeeze(-1) > floor
    return (((w > rel * top).sum(-1) > 1) & used).sum(-1)
