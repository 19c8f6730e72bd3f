"""Sparse autoencoders, many at once.

One ``SAE`` object holds ``n_instances`` independent autoencoders of the same shape (one
per L1 coefficient, or per seed), stacked along a leading instance dimension, so an L1
sweep at one dictionary size is a single model on the device. For each instance::

    c     = ReLU(W_enc (x - b_dec) + b_enc)        # dictionary coefficients, (J,)
    x_hat = D c + b_dec,  D = W_dec / ||W_dec||    # decoder rows kept at unit norm
    loss  = (1/h) ||x - x_hat||^2 + (alpha / J) ||c||_1

as in the interim report (which has no decoder bias: ``b_dec`` stays 0 unless
``decoder_bias=True``, which is what language-model activations want). The report divides
the L1 term by the dictionary size J; ``l1_divide_by_d_sae=False`` gives the form most
libraries use today. Under the report's form the same alpha means a J-times weaker
penalty per latent, so the best alpha grows with J: compare sizes with care.

Saved SAEs use the layout SAELens 6 reads (``cfg.json`` + ``sae_weights.safetensors``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from helpers.data import stream_seed
from helpers.device import get_device
from helpers.paths import atomic_write

SAE_LENS_VERSION = "6.54.12"
"""The SAELens version whose file layout ``save_sae`` writes (recorded in cfg.json)."""


@dataclass(frozen=True)
class SAEConfig:
    """Shape and training settings of a stack of SAEs (one instance per L1 coefficient)."""

    d_in: int
    """h: dimension of the activations the SAE reads."""
    d_sae: int
    """J: number of dictionary elements (latents)."""
    l1_coeffs: tuple[float, ...] = (0.1,)
    """alpha per instance; repeat a value to train several seeds of it."""
    lr: float = 1e-3
    """Adam learning rate (the report's 1e-3)."""
    batch_size: int = 256
    """Examples per step, shared by all instances (the report's 256)."""
    steps: int = 10_000
    """Adam steps."""
    decoder_bias: bool = False
    """Learn b_dec (subtracted before encoding, added after decoding). Off for toy data."""
    l1_divide_by_d_sae: bool = True
    """The report's (alpha / J) ||c||_1; False gives alpha ||c||_1."""
    dead_window: int = 500
    """T: a latent that fired in none of the last T batches counts as dead."""
    input_noise_std: float = 0.0
    """Gaussian noise added to the input only (a denoising SAE); the target stays clean."""
    seed: int = 0
    """Seed for the initialisation (instance i uses seed + i)."""
    log_every: int = 50
    """Steps per row of the training log (each row averages its window)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "l1_coeffs", tuple(float(a) for a in np.atleast_1d(self.l1_coeffs)))
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")
        if not self.l1_coeffs or min(self.l1_coeffs) < 0:
            raise ValueError(f"l1_coeffs must be one or more non-negative numbers, got {self.l1_coeffs}")
        if self.batch_size < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError("batch_size and lr must be positive and steps non-negative")

    @property
    def n_instances(self) -> int:
        return len(self.l1_coeffs)


class ForwardOutput(NamedTuple):
    x_hat: torch.Tensor
    """(inst, batch, d_in) reconstruction."""
    acts: torch.Tensor
    """(inst, batch, d_sae) dictionary coefficients c."""
    recon_loss: torch.Tensor
    """(inst,) (1/h) ||x - x_hat||^2, averaged over the batch."""
    l1_loss: torch.Tensor
    """(inst,) the L1 term including its coefficient, averaged over the batch."""
    loss: torch.Tensor
    """() sum over instances of recon + l1 (instances do not interact)."""


class StepStats(NamedTuple):
    """Per-instance numbers from one training step (see ``SAE.compute_grads``)."""

    recon_loss: torch.Tensor
    """(inst,) (1/h) ||x - x_hat||^2, averaged over the batch."""
    l1_loss: torch.Tensor
    """(inst,) the L1 term including its coefficient."""
    l0: torch.Tensor
    """(inst,) mean number of active latents per example."""
    fired: torch.Tensor
    """(inst, d_sae) bool: the latent was active on at least one example of the batch."""


class SAE(nn.Module):
    """A stack of ``cfg.n_instances`` sparse autoencoders."""

    def __init__(self, cfg: SAEConfig, device: str | torch.device | None = None):
        super().__init__()
        self.cfg = cfg
        dev = get_device(device)
        I, h, J = cfg.n_instances, cfg.d_in, cfg.d_sae
        W_dec = torch.empty(I, J, h)
        for i in range(I):  # orthogonal init (as in the report), a different seed per instance
            gen = torch.Generator().manual_seed(stream_seed(cfg.seed + i, "sae-init"))
            W_dec[i] = nn.init.orthogonal_(torch.empty(J, h), generator=gen)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dev))  # (I, J, h)
        # Encoder starts as the decoder's transpose: every latent begins by reading the
        # direction it writes, which makes early training far less noisy.
        self.W_enc = nn.Parameter(W_dec.transpose(1, 2).contiguous().to(dev))  # (I, h, J)
        self.b_enc = nn.Parameter(torch.zeros(I, J, device=dev))
        self.b_dec = nn.Parameter(torch.zeros(I, h, device=dev), requires_grad=cfg.decoder_bias)
        self.register_buffer("l1_coeffs", torch.tensor(cfg.l1_coeffs, device=dev))  # (I,)

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        I, h = self.cfg.n_instances, self.cfg.d_in
        if x.shape[-1] != h or x.dim() not in (2, 3) or (x.dim() == 3 and x.shape[0] not in (1, I)):
            raise ValueError(
                f"expected activations of shape (batch, {h}) or ({I}, batch, {h}), got {tuple(x.shape)}"
            )
        return x

    def decoder_directions(self) -> torch.Tensor:
        """The learned dictionary D: unit-norm feature directions, (inst, d_sae, d_in)."""
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """c = ReLU((x - b_dec) W_enc + b_enc): (batch, d_in) or (inst, batch, d_in) -> (inst, batch, d_sae)."""
        x = self._check_input(x)
        if self.cfg.decoder_bias:
            x = x - self.b_dec[:, None, :]
        return torch.relu(torch.matmul(x, self.W_enc) + self.b_enc[:, None, :])

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """x_hat = c D + b_dec: (inst, batch, d_sae) -> (inst, batch, d_in)."""
        return torch.baddbmm(self.b_dec[:, None, :], acts, self.decoder_directions())

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> ForwardOutput:
        """Reconstruct ``x``; losses are against ``target`` (default ``x``), per instance."""
        acts = self.encode(x)
        x_hat = self.decode(acts)
        target = x if target is None else target
        recon = (x_hat - target).pow(2).mean(-1).mean(-1)  # (I,): (1/h)||.||^2, batch mean
        l1 = acts.sum(-1).mean(-1) * self.l1_coeffs  # acts >= 0, so |c|_1 is the sum
        if self.cfg.l1_divide_by_d_sae:
            l1 = l1 / self.cfg.d_sae
        return ForwardOutput(x_hat, acts, recon, l1, (recon + l1).sum())

    @torch.no_grad()
    def compute_grads(self, x: torch.Tensor, target: torch.Tensor | None = None) -> "StepStats":
        """Set ``.grad`` of every trainable parameter to d(loss)/d(param), without autograd.

        The same numbers as ``self(x, target).loss.backward()`` (a test checks this), written
        out by hand because the step is then five batched GEMMs and a few fused elementwise
        passes, with no autograd graph: about twice as fast on a CPU, and the shared batch x
        (batch, d_in) is read by every instance without being copied.
        """
        x = self._check_input(x)
        if x.dim() != 2:
            raise ValueError("compute_grads trains on one shared batch: pass x of shape (batch, d_in)")
        cfg = self.cfg
        I, h, J, B = cfg.n_instances, cfg.d_in, cfg.d_sae, x.shape[0]
        target = x if target is None else target
        x_b = x.expand(I, B, h)  # a view: every instance reads the same memory
        b_enc = self.b_enc
        if cfg.decoder_bias:  # (x - b_dec) W_enc + b_enc = x W_enc + (b_enc - b_dec W_enc)
            b_enc = b_enc - torch.bmm(self.b_dec[:, None, :], self.W_enc)[:, 0]
        acts = torch.baddbmm(b_enc[:, None, :], x_b, self.W_enc).relu_()  # (I, B, J)
        norms = self.W_dec.norm(dim=-1, keepdim=True)  # (I, J, 1)
        D = self.W_dec / norms  # (I, J, h)
        err = torch.baddbmm(self.b_dec[:, None, :], acts, D).sub_(target)  # (I, B, h) x_hat - target
        k = self.l1_coeffs / J if cfg.l1_divide_by_d_sae else self.l1_coeffs  # (I,) per-latent L1 weight
        per_latent = acts.sum(1)  # (I, J) summed over the batch
        recon = err.square().sum((1, 2)) / (B * h)
        l1 = k * per_latent.sum(-1) / B
        l0 = torch.count_nonzero(acts, dim=(1, 2)).float() / B

        # Backward, from the loss down: recon = mean (x_hat - t)^2 and l1 = k mean sum(c).
        g_xhat = err.mul_(2.0 / (B * h))  # (I, B, h), err is not needed any more
        g_pre = torch.baddbmm((k / B)[:, None, None], g_xhat, D.transpose(1, 2))  # (I, B, J) d/dc
        g_pre = torch.ops.aten.threshold_backward(g_pre, acts, 0.0)  # ReLU: no gradient where c = 0
        self.W_enc.grad = torch.bmm(x_b.transpose(1, 2), g_pre)  # (I, h, J)
        self.b_enc.grad = g_pre.sum(1)
        g_D = torch.bmm(acts.transpose(1, 2), g_xhat)  # (I, J, h) gradient wrt the unit rows D
        # D = W / ||W||: only the part of g_D orthogonal to D moves W, scaled by 1 / ||W||.
        self.W_dec.grad = g_D.addcmul_(D, (g_D * D).sum(-1, keepdim=True), value=-1.0).div_(norms)
        if cfg.decoder_bias:  # the encoder read x - b_dec: both terms of b_dec, and W_enc's shift
            self.W_enc.grad.sub_(self.b_dec[:, :, None] * self.b_enc.grad[:, None, :])
            self.b_dec.grad = g_xhat.sum(1) - torch.bmm(self.b_enc.grad[:, None, :], self.W_enc.transpose(1, 2))[:, 0]
        return StepStats(recon, l1, l0, per_latent > 0)

    def select(self, i: int) -> "SAE":
        """Instance ``i`` as a one-instance SAE (a copy)."""
        if not -self.cfg.n_instances <= i < self.cfg.n_instances:
            raise IndexError(f"instance {i} out of range for {self.cfg.n_instances} instances")
        cfg = SAEConfig(**{**asdict(self.cfg), "l1_coeffs": (self.cfg.l1_coeffs[i],), "seed": self.cfg.seed + i})
        one = SAE(cfg, device=self.device)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(one, name).copy_(getattr(self, name)[i : i + 1])
        return one


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
@dataclass
class TrainLog:
    """What happened during training; each row averages ``log_every`` steps."""

    l1_coeffs: tuple[float, ...]
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(rows,) the last step of each window."""
    recon_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) mean (1/h)||x - x_hat||^2."""
    l1_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) mean L1 term (with its coefficient)."""
    l0: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) mean number of active latents per example."""
    dead: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(rows, inst) latents that fired in none of the last dead_window batches."""
    steps_since_fired: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(inst, d_sae) at the end of training."""
    seconds: float = 0.0
    examples: int = 0

    def final(self) -> dict[str, np.ndarray]:
        """Per-instance values of the last logged window."""
        return {
            "recon_loss": self.recon_loss[-1],
            "l1_loss": self.l1_loss[-1],
            "l0": self.l0[-1],
            "dead": self.dead[-1],
        }


def train_sae(
    sae: SAE,
    sample_fn: Callable[[int], torch.Tensor],
    steps: int | None = None,
    progress: bool = True,
    prefetch: int = 16,
    desc: str = "training SAEs",
) -> TrainLog:
    """Train every instance of ``sae`` with Adam on batches from ``sample_fn(n) -> (n, d_in)``.

    All instances see the same batches (so an L1 sweep compares like with like).
    ``prefetch`` batches are drawn per call to ``sample_fn`` to amortise its overhead.
    With ``decoder_bias``, b_dec starts at the mean of the first batches.
    """
    cfg = sae.cfg
    steps = cfg.steps if steps is None else steps
    B, I, J, dev = cfg.batch_size, cfg.n_instances, cfg.d_sae, sae.device
    params = [p for p in sae.parameters() if p.requires_grad]
    try:  # one fused kernel per parameter where this torch has it (cpu, cuda), else foreach
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    except RuntimeError:
        opt = torch.optim.Adam(params, lr=cfg.lr, foreach=True)
    noise_gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.seed, "sae-input-noise"))

    last_fired = torch.zeros(I, J, dtype=torch.long, device=dev)  # step each latent last fired
    sums = torch.zeros(3, I, device=dev)  # recon, l1, l0 summed over the window
    rows: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    buffer = torch.empty(0)
    start, t0 = 0, time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        if start >= buffer.shape[0]:
            buffer = sample_fn(B * prefetch).to(dev)
            if buffer.dim() != 2 or buffer.shape[1] != cfg.d_in:
                raise ValueError(f"sample_fn must return (n, {cfg.d_in}) activations, got {tuple(buffer.shape)}")
            start = 0
            if step == 0 and cfg.decoder_bias:
                with torch.no_grad():
                    sae.b_dec.copy_(buffer.mean(0).expand_as(sae.b_dec))
        x = buffer[start : start + B]
        start += B
        x_in = x + cfg.input_noise_std * torch.randn(x.shape, device=dev, generator=noise_gen) if cfg.input_noise_std else x
        stats = sae.compute_grads(x_in, target=x)
        opt.step()
        with torch.no_grad():
            last_fired.masked_fill_(stats.fired, step + 1)
            sums += torch.stack([stats.recon_loss, stats.l1_loss, stats.l0])
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                window = (step % cfg.log_every) + 1
                dead = ((step + 1 - last_fired) >= cfg.dead_window).sum(-1)
                rows.append((step + 1, (sums / window).cpu(), dead.cpu()))
                sums.zero_()
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


# --------------------------------------------------------------------------------------
# Saving and loading, in the layout SAELens 6 reads
# --------------------------------------------------------------------------------------
WEIGHTS_FILE, CFG_FILE = "sae_weights.safetensors", "cfg.json"


def _instance_folder_name(i: int, alpha: float) -> str:
    return f"instance_{i:02d}_l1_{alpha:.4g}"


def save_sae(sae: SAE, folder: str | Path, extra: dict | None = None) -> list[Path]:
    """Save each instance to its own folder (``cfg.json`` + ``sae_weights.safetensors``).

    A one-instance SAE saves into ``folder`` itself; a stack into
    ``folder/instance_XX_l1_<alpha>/``. Weights are float32 in SAELens' orientation:
    W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in) with unit rows, b_dec (d_in,).
    ``apply_b_dec_to_input`` is written as our encoder does it: SAELens defaults it to true,
    and a wrong value would shift every latent's input by b_dec.
    """
    folder = Path(folder)
    cfg = sae.cfg
    paths = []
    with torch.no_grad():
        W_dec = sae.decoder_directions().detach().float().cpu()
        for i, alpha in enumerate(cfg.l1_coeffs):
            out = folder if cfg.n_instances == 1 else folder / _instance_folder_name(i, alpha)
            out.mkdir(parents=True, exist_ok=True)
            tensors = {
                "W_enc": sae.W_enc[i].detach().float().cpu().contiguous(),
                "b_enc": sae.b_enc[i].detach().float().cpu().contiguous(),
                "W_dec": W_dec[i].contiguous(),
                "b_dec": sae.b_dec[i].detach().float().cpu().contiguous(),
            }
            meta = {
                "architecture": "standard",
                "d_in": cfg.d_in,
                "d_sae": cfg.d_sae,
                "dtype": "float32",
                "device": "cpu",
                "apply_b_dec_to_input": cfg.decoder_bias,
                "normalize_activations": "none",
                "reshape_activations": "none",
                "metadata": {"sae_lens_version": SAE_LENS_VERSION, **(extra or {})},
                "course": {**asdict(cfg), "l1_coeffs": [alpha], "seed": cfg.seed + i},
            }
            with atomic_write(out / WEIGHTS_FILE) as tmp:
                save_file(tensors, str(tmp))
            with atomic_write(out / CFG_FILE) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
            paths.append(out)
    return paths


def load_sae(folder: str | Path, device: str | torch.device | None = None) -> SAE:
    """Load one saved SAE (ours or any SAELens 'standard' SAE) as a one-instance ``SAE``."""
    folder = Path(folder)
    if not (folder / CFG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        subs = sorted(p.name for p in folder.glob("instance_*")) if folder.is_dir() else []
        hint = f" It holds instance folders ({', '.join(subs[:3])}...): load one of those." if subs else ""
        raise FileNotFoundError(
            f"No saved SAE at {folder}: expected {CFG_FILE} and {WEIGHTS_FILE} there "
            f"(train one and call save_sae first).{hint}"
        )
    try:
        meta = json.loads((folder / CFG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / CFG_FILE} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or not {"d_in", "d_sae"} <= meta.keys():
        raise ValueError(f"{folder / CFG_FILE} must be a JSON object with d_in and d_sae (an SAELens cfg.json)")
    if meta.get("architecture", "standard") != "standard":
        raise ValueError(f"{folder}: architecture {meta.get('architecture')!r} is not a standard ReLU SAE")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {err}") from err
    d_in, d_sae = int(meta["d_in"]), int(meta["d_sae"])
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise ValueError(f"{folder}: {name} should have shape {shape} from cfg.json, got {got}")
    W_enc, b_enc, W_dec, b_dec = (tensors[k].float() for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
    # Our decoder uses unit rows. A file whose rows are not unit (most SAELens SAEs) gives
    # the same reconstruction once each row's norm moves into its latent: c_j ||W_j|| =
    # ReLU(pre_j ||W_j||). Latents then come out as SAELens' fold_W_dec_norm() would give them.
    norms = W_dec.norm(dim=-1)  # (d_sae,)
    if (norms - 1).abs().max() > 1e-4:
        W_enc, b_enc = W_enc * norms, b_enc * norms
    # Our encoder subtracts b_dec iff decoder_bias; the decoder always adds it. So a file with
    # apply_b_dec_to_input=false still round-trips: its b_dec is a fixed output offset here.
    apply = bool(meta.get("apply_b_dec_to_input", True))
    course = meta.get("course", {})
    fields = {k: v for k, v in course.items() if k in SAEConfig.__dataclass_fields__}
    fields.update(d_in=d_in, d_sae=d_sae,
                  decoder_bias=apply and (bool(b_dec.abs().max() > 0) or bool(fields.get("decoder_bias", False))))
    fields.setdefault("l1_coeffs", (0.0,))
    sae = SAE(SAEConfig(**fields), device=device)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc[None])
        sae.b_enc.copy_(b_enc[None])
        sae.W_dec.copy_(W_dec[None])
        sae.b_dec.copy_(b_dec[None])
    return sae
