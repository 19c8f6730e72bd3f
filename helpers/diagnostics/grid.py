"""Training a (dictionary size x L1) grid of SAEs: ``run_grid``.

Each size's L1 values train together as one stacked SAE (all see the same batches), built
from one base ``SAEConfig`` with ``dataclasses.replace(base, d_sae=J, l1_coeffs=...)``.
Every size gets its own random stream: two sizes seeded alike start from the same random
numbers (an orthogonal init of a larger matrix begins with the same draws), so untrained
dictionaries of different sizes would already agree and MMCS with larger dictionaries
would measure the seed, not what training found.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import get_device, stream_seed
from helpers.diagnostics.cache import CACHE_AREA, read_grid, write_grid
from helpers.diagnostics.result import GridResult
from helpers.diagnostics.rules import mmcs_with_larger
from helpers.metrics import mmcs
from helpers.optim import NonFiniteLossError
from helpers.paths import jsonable, source_hash
from helpers.store import cached
from helpers.sae import SAE, SAEConfig, TrainLog, train_sae

class GridDivergedWarning(RuntimeWarning):
    """Some cells of a grid trained to a NaN, infinite or runaway loss; their metrics are NaN."""


warnings.simplefilter("always", GridDivergedWarning)  # show it on every run, not once per session


def training_code(sample_fn) -> dict:
    """Hashes of the code a grid's numbers come from: the grid and its diagnostics, the SAE
    package (model, loss, trainer), the optimizer, the metrics, and the data's sampler."""
    import helpers.metrics
    import helpers.optim
    import helpers.sae
    from helpers.diagnostics import rules

    sae_files = sorted(Path(helpers.sae.__file__).parent.glob("*.py"))
    return {"grid": source_hash(run_grid, rules, helpers.metrics, helpers.optim),  # run_grid: this whole module
            "sae": source_hash(*sae_files), "data": source_hash(sample_fn), "torch": torch.__version__.split("+")[0]}



def column_config(base: SAEConfig, d_sae: int, l1_values: Sequence[float]) -> SAEConfig:
    """The config of one size's column: ``base`` with this size, these L1 values and a seed
    of its own (instance i of the column then draws from seed + i, as every stacked SAE does)."""
    return replace(base, d_sae=int(d_sae), l1_coeffs=tuple(float(a) for a in l1_values),
                   seed=stream_seed(base.seed, f"diagnostic-grid:d_sae={int(d_sae)}"))


def run_grid(
    sample_fn: Callable[[int], torch.Tensor],
    base: SAEConfig,
    sizes: Sequence[float],
    l1_values: Sequence[float],
    *,
    reference_size: int | None = None,
    ground_truth: torch.Tensor | None = None,
    cache_name: str | None = None,
    cache_description=None,
    keep_dictionaries: bool = True,
    keep_saes: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> GridResult:
    """Train one SAE per (dictionary size, L1 coefficient) and measure the diagnostics.

    ``base`` holds every training setting (d_in, steps, lr, batch_size, dead_window, ...);
    its ``d_sae``, ``l1_coeffs`` and ``seed`` are replaced per column (see ``column_config``).
    ``sizes`` are dictionary sizes J, or multiples of ``reference_size`` when it is given
    (``[0.5, 1, 2]`` with ``reference_size=512`` means J = 256, 512, 1024).
    ``ground_truth`` (G, d_in), when known, fills the ``mmcs_ground_truth`` column.
    ``keep_saes`` keeps the trained models on the result (to splice into a language model);
    they are not cached, so it cannot be combined with ``cache_name``.

    A column whose loss turns NaN or infinite is recorded as diverged (NaN metrics, see
    ``GridResult.diverged``) with a ``GridDivergedWarning`` naming its cells; the rest of
    the grid still trains.

    With ``cache_name``, the result is stored under ``cache_dir("diagnostics")`` and reused
    when the same grid is asked for again. ``cache_description`` must then describe the data
    ``sample_fn`` draws (e.g. its ``GroundTruthConfig``, or the model, layer and token count
    of a language model's activations); the key also covers every argument above and the
    source code of the training, the SAE and ``sample_fn``, so a cache follows the code.
    """
    if not isinstance(base, SAEConfig):
        raise TypeError(f"base must be an SAEConfig with the training settings, got {type(base).__name__}")
    sizes_J = _resolve_sizes(sizes, reference_size)
    alphas = tuple(float(a) for a in l1_values)
    if not alphas or min(alphas) <= 0 or list(alphas) != sorted(set(alphas)):
        raise ValueError(f"l1_values must be positive, distinct and ascending, got {list(l1_values)}")
    if base.steps <= base.dead_window:
        raise ValueError(
            f"base.steps={base.steps} must exceed base.dead_window={base.dead_window}: a latent can only "
            "count as dead after it has gone dead_window batches without firing"
        )
    if ground_truth is not None and (ground_truth.dim() != 2 or ground_truth.shape[1] != base.d_in):
        raise ValueError(f"ground_truth must be (G, {base.d_in}) feature rows, got {tuple(ground_truth.shape)}")
    if keep_saes and cache_name is not None:
        raise ValueError("keep_saes=True returns models that the cache does not store: drop cache_name")
    if cache_name is not None and cache_description is None:
        raise ValueError("cache_name needs cache_description: the settings of the data sample_fn draws "
                         "(e.g. its GroundTruthConfig), so that different data never share a cache entry")
    # Everything the result depends on, as JSON now: a config that cannot be written must
    # fail before the training, not after it.
    settings = {k: v for k, v in asdict(base).items() if k not in ("d_sae", "l1_coeffs", "seed")}
    config = jsonable({
        "sae": settings, "seeds": [column_config(base, J, alphas).seed for J in sizes_J],
        "d_sae_values": list(sizes_J), "l1_values": list(alphas),
        "reference_size": reference_size, "keep_dictionaries": keep_dictionaries,
        "ground_truth": ground_truth, "data": cache_description,
    }, "run_grid settings")
    train = dict(sample_fn=sample_fn, base=base, sizes_J=sizes_J, alphas=alphas, config=config,
                 reference_size=reference_size, ground_truth=ground_truth, keep_dictionaries=keep_dictionaries,
                 keep_saes=keep_saes, device=device, progress=progress)
    if cache_name is None:
        return _train_grid(**train)
    config["code"] = training_code(sample_fn)
    result = cached(CACHE_AREA, cache_name, config, lambda: _train_grid(**train), write_grid, read_grid)
    if result.from_cache:
        _warn_diverged(result)
    return result


def _train_grid(sample_fn, base: SAEConfig, sizes_J, alphas, config: dict, reference_size, ground_truth,
                keep_dictionaries: bool, keep_saes: bool, device, progress: bool) -> GridResult:
    """Train every column of the grid and measure it (``run_grid`` without the cache)."""
    dev = get_device(device)
    S, L, B = len(sizes_J), len(alphas), base.batch_size
    cost = np.array([J * L for J in sizes_J], dtype=float)  # one step's work grows with J x L
    bar = tqdm(total=float(cost.sum() * base.steps), disable=not progress, desc="diagnostic grid",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    logs, dicts, saes, errors = [], [], [], {}
    for i, J in enumerate(sizes_J):
        size = f"{J / reference_size:g}x" if reference_size else f"J={J}"
        bar.set_description(f"diagnostic grid: size {size} ({i + 1}/{S})")
        cfg = column_config(base, J, alphas)
        sae = SAE(cfg, device=dev)
        # train_sae draws batches in chunks through sample_fn; counting the rows drawn moves
        # one bar for the whole grid (a few steps ahead of training, by the prefetch).
        done = [0]

        def counted(n: int, _w: float = cost[i] / B) -> torch.Tensor:
            take = min(n, base.steps * B - done[0])
            done[0] += n
            bar.update(max(take, 0) * _w)
            return sample_fn(n)

        try:
            logs.append(train_sae(sae, counted, progress=False))
        except NonFiniteLossError as err:  # the column's log has no rows
            errors[i] = str(err)
            empty = np.zeros((0, L))
            logs.append(TrainLog(alphas, steps=np.zeros(0, dtype=np.int64), recon_loss=empty, l1_loss=empty, l0=empty,
                                 dead=empty, steps_since_fired=np.full((L, J), -1, dtype=np.int64)))
            bar.update(max(base.steps * B - done[0], 0) * cost[i] / B)
        with torch.no_grad():
            D = sae.decoder_directions().detach().float()  # (L, J, d_in)
        if i in errors:
            D = torch.full_like(D, float("nan"))
        dicts.append(D)
        if keep_saes:
            saes.append(sae)
    bar.close()

    final = [log.final() if len(log.steps) else None for log in logs]
    metrics = {k: np.stack([np.full(L, np.nan) if f is None else f[k] for f in final]).astype(np.float64)
               for k in ("recon_loss", "l1_loss", "l0", "dead")}
    # A column that stopped with an error is diverged as a whole; one that ran through can
    # still end with a non-finite number or weight in some instance.
    diverged = np.zeros((S, L), dtype=bool)
    for i, D in enumerate(dicts):
        diverged[i] = (~torch.isfinite(D).flatten(1).all(1)).cpu().numpy()
    for k in metrics:
        diverged |= ~np.isfinite(metrics[k])
    for i, D in enumerate(dicts):
        D[torch.from_numpy(diverged[i]).to(D.device)] = float("nan")
    gt = np.full((S, L), np.nan)
    if ground_truth is not None:
        F = ground_truth.to(dev, torch.float32)
        gt = np.stack([mmcs(D, F).cpu().numpy() for D in dicts])  # (S, L)
    for k in metrics:
        metrics[k][diverged] = np.nan
    result = GridResult(
        d_sae_values=np.array(sizes_J), l1_values=np.array(alphas), **metrics, mmcs_ground_truth=gt,
        mmcs_larger=mmcs_with_larger(dicts), reference_size=reference_size, diverged=diverged, logs=logs,
        dictionaries=[D.cpu().half().numpy() for D in dicts] if keep_dictionaries else None,
        config=config, seconds=float(sum(log.seconds for log in logs)), saes=saes if keep_saes else None,
    )
    _warn_diverged(result, errors)
    return result


def _warn_diverged(result: GridResult, errors: dict[int, str] | None = None) -> None:
    cells = result.diverged_cells()
    if cells:
        why = "".join(f"\n  {result.size_label(i)}: {msg}" for i, msg in (errors or {}).items())
        warnings.warn(
            f"{len(cells)} of {result.diverged.size} grid cells diverged (a NaN, infinite or runaway loss), their metrics "
            f"are NaN: {'; '.join(cells)}.{why}\nCheck the data for NaN/inf and try a smaller lr.",
            GridDivergedWarning, stacklevel=3)


def _resolve_sizes(values: Sequence[float], reference_size: int | None) -> tuple[int, ...]:
    if reference_size is not None:
        if reference_size < 1:
            raise ValueError(f"reference_size must be a positive number of features, got {reference_size}")
        sizes = tuple(int(round(float(r) * reference_size)) for r in values)
    else:
        if any(float(v) != int(v) for v in values):
            raise ValueError(
                f"sizes {list(values)} are not whole numbers: pass sizes J, or ratios together "
                "with reference_size (e.g. sizes=[0.5, 1, 2], reference_size=512)"
            )
        sizes = tuple(int(v) for v in values)
    if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
        raise ValueError(f"dictionary sizes must be positive, distinct and ascending, got {list(sizes)}")
    return sizes
