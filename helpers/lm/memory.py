"""How much device memory notebook 04's SAE grid needs, and which dictionary sizes fit a GPU.

``lm.sae_grid`` trains one size at a time, its L1 values stacked as instances of one SAE, and
keeps every finished SAE on the device for the evaluation that follows. At the peak (the last,
largest size) the device holds:

* the language model's weights;
* the training activations (``Activations.sampler`` copies them to the device once);
* every finished SAE (weights only: gradients are freed after each step);
* the SAE in training: weights, gradients and Adam's two moments, 4 floats per parameter;
* one step's working set: the prefetched batches and, per instance, the pre-activations,
  activations, their gradients and the reconstruction.

``grid_memory`` adds these up in bytes (float32 everywhere); ``fit_sizes`` drops the largest
sizes until the total fits a budget (a free Colab T4 by default) and says what it dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

T4_BYTES = 15 * 2**30
"""GPU memory of a free Colab T4 (15 GiB)."""
HEADROOM = 0.85
"""Share of a card's memory the grid may plan for (the rest: CUDA context, allocator slack)."""
_F32 = 4


@dataclass(frozen=True)
class GridMemory:
    """Bytes on the device at the grid's peak, by part (see the module docstring)."""

    model: int
    activations: int
    finished_saes: int
    training: int
    step: int

    @property
    def total(self) -> int:
        return self.model + self.activations + self.finished_saes + self.training + self.step

    def describe(self) -> str:
        gib = 2**30
        return (f"about {self.total / gib:.1f} GiB at the peak: training activations {self.activations / gib:.2f}, "
                f"finished SAEs {self.finished_saes / gib:.2f}, the SAE in training with its gradients and Adam "
                f"{self.training / gib:.2f}, one step {self.step / gib:.2f}, the model {self.model / gib:.2f}")


def sae_parameters(d_in: int, d_sae: int, n_instances: int) -> int:
    """Parameters of a stacked SAE: W_enc, W_dec, b_enc and b_dec (stored with or without
    ``decoder_bias``), per instance."""
    return n_instances * (2 * d_in * d_sae + d_sae + d_in)


def grid_memory(d_in: int, sizes: Sequence[int], n_alphas: int, train_rows: int, batch_size: int = 256,
                model_parameters: int = 0, prefetch: int = 16) -> GridMemory:
    """Device bytes of ``lm.sae_grid`` at its peak: while the last (largest) of ``sizes`` trains.

    ``sizes`` are dictionary sizes in latents, ``train_rows`` the activation rows the sampler
    copies to the device, ``model_parameters`` the language model's parameter count.
    """
    if not sizes:
        raise ValueError("sizes is empty: pass at least one dictionary size (in latents)")
    if min(int(d_in), int(n_alphas), int(train_rows), int(batch_size)) < 1:
        raise ValueError("d_in, n_alphas, train_rows and batch_size must all be positive integers")
    sizes = sorted(int(J) for J in sizes)
    largest = sizes[-1]
    finished = sum(sae_parameters(d_in, J, n_alphas) for J in sizes[:-1])
    training = 4 * sae_parameters(d_in, largest, n_alphas)           # weights, gradients, Adam m and v
    step = prefetch * batch_size * d_in + n_alphas * batch_size * (4 * largest + 2 * d_in)
    return GridMemory(model=_F32 * int(model_parameters), activations=_F32 * int(train_rows) * int(d_in),
                      finished_saes=_F32 * finished, training=_F32 * training, step=_F32 * step)


def fit_sizes(d_in: int, expansions: Sequence[float], n_alphas: int, train_rows: int, batch_size: int = 256,
              model_parameters: int = 0, budget: int = T4_BYTES) -> tuple[tuple[float, ...], GridMemory, tuple[float, ...]]:
    """The longest run of ``expansions`` (multiples of ``d_in``, smallest first) whose grid fits
    ``HEADROOM * budget`` bytes: (kept expansions, their ``GridMemory``, dropped expansions).

    Raises if even the smallest size does not fit (fewer tokens or fewer L1 values then help).
    """
    ordered = sorted(float(e) for e in expansions)
    for n in range(len(ordered), 0, -1):
        memory = grid_memory(d_in, [int(round(e * d_in)) for e in ordered[:n]], n_alphas, train_rows,
                             batch_size, model_parameters)
        if memory.total <= HEADROOM * budget:
            return tuple(ordered[:n]), memory, tuple(ordered[n:])
    memory = grid_memory(d_in, [int(round(ordered[0] * d_in))], n_alphas, train_rows, batch_size, model_parameters)
    raise ValueError(f"even the {ordered[0]:g}x grid needs {memory.describe()}, more than "
                     f"{HEADROOM:.0%} of the {budget / 2**30:.1f} GiB budget: harvest fewer tokens or pass fewer L1 values")


def grid_flops(d_in: int, sizes: Sequence[int], n_alphas: int, steps: int, batch_size: int = 256) -> float:
    """Matmul FLOPs of training the grid: per step and instance, encoder and decoder forward
    (2 x 2*B*d*J) and their backward (twice that)."""
    return float(6 * 2 * batch_size * d_in * sum(int(J) for J in sizes) * n_alphas * steps)


def plan_grid(acts, model, expansions: Sequence[float], n_alphas: int, steps: int, holdout: float = 0.0,
              batch_size: int = 256, name: str = "post", budget: int | None = None):
    """The sizes notebook 04's grid trains on this device, and a sentence with its memory and work.

    On a GPU the budget is the card's memory (pass ``budget=T4_BYTES`` to plan for a free
    Colab T4 on a larger card); on a CPU nothing is dropped and the estimate is of RAM.
    Returns (expansions to train, ``GridMemory``, a printable sentence).
    """
    import torch

    from helpers.device import get_device

    d_in = int(acts.acts[name].shape[1])
    train_rows = len(acts.rows(holdout))                           # what the sampler copies to the device
    params = sum(p.numel() for p in model.parameters())
    dev = get_device()
    if budget is None and dev.type == "cuda":
        budget = torch.cuda.get_device_properties(dev).total_memory
    if budget is None:
        kept = tuple(sorted(float(e) for e in expansions))
        memory, dropped = grid_memory(d_in, [int(round(e * d_in)) for e in kept], n_alphas, train_rows, batch_size,
                                      params), ()
    else:
        kept, memory, dropped = fit_sizes(d_in, expansions, n_alphas, train_rows, batch_size, params, budget)
    flops = grid_flops(d_in, [int(round(e * d_in)) for e in kept], n_alphas, steps, batch_size)
    where = f"{budget / 2**30:.1f} GiB {dev.type} budget" if budget is not None else dev.type
    text = (f"grid plan ({where}): sizes {', '.join(f'{e:g}x' for e in kept)} of {d_in}, {n_alphas} L1 values each, "
            f"{memory.describe()}; {flops / 1e12:.1f} TFLOP of matmuls")
    if dropped:
        text += f"; dropped {', '.join(f'{e:g}x' for e in dropped)} (over {HEADROOM:.0%} of the budget)"
    return kept, memory, text
