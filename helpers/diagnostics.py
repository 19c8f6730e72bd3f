"""Choosing dictionary size and L1 coefficient without the ground truth.

The interim report trains a grid of SAEs (dictionary size J x L1 coefficient alpha) and
reads three diagnostics off it, none of which needs the true features:

1. dead latents: a latent that fired in none of the last T batches. They appear when the
   dictionary is larger than the data needs or the L1 penalty is too strong;
2. loss stickiness: the log reconstruction loss and the log L1 loss, each standardized
   over the grid, summed (SSLL). Where the L1 coefficient suits the size, both losses
   stay flat while alpha grows (a "sticky" basin);
3. MMCS between a dictionary and every larger one at the same alpha: there are many ways
   to be wrong and one way to be right, so dictionaries agree most at the right size.

``run_grid`` trains the grid (each size's L1 column as one stacked SAE) and caches it;
``GridResult`` is the tidy table; ``suggest_hyperparameters`` turns each diagnostic into a
choice. Nothing here reads the ground truth except the column that says how well each
cell recovered it (``mmcs_ground_truth``), which exists only for toy data.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import get_device
from helpers.metrics import mmcs, mmcs_between
from helpers.paths import atomic_write, cache_dir, cache_key
from helpers.sae import SAE, SAEConfig, TrainLog, train_sae

DEAD_CAP = 100
"""The report caps dead-latent counts at 100 in its heatmaps, to resolve small counts."""

METRICS = ("recon_loss", "l1_loss", "l0", "dead", "mmcs_ground_truth", "mmcs_larger")
"""Per-cell numbers a grid stores, each an (n_sizes, n_l1) array."""

_CACHE_VERSION = 1  # bump when the stored layout or the training changes meaning


# --------------------------------------------------------------------------------------
# The result: one row per (size, L1)
# --------------------------------------------------------------------------------------
@dataclass
class GridResult:
    """A trained (dictionary size x L1) grid: final numbers per cell, logs, dictionaries."""

    d_sae_values: np.ndarray
    """(S,) dictionary sizes J, ascending."""
    l1_values: np.ndarray
    """(L,) L1 coefficients alpha, ascending."""
    recon_loss: np.ndarray
    """(S, L) final (1/h)||x - x_hat||^2 (mean over the last logged window)."""
    l1_loss: np.ndarray
    """(S, L) final L1 term, with its coefficient (0 when no latent fires)."""
    l0: np.ndarray
    """(S, L) final mean number of active latents per example."""
    dead: np.ndarray
    """(S, L) latents that fired in none of the last ``dead_window`` batches."""
    mmcs_ground_truth: np.ndarray
    """(S, L) MMCS of the true features against the dictionary (NaN without ground truth)."""
    mmcs_larger: np.ndarray
    """(S, L) MMCS with each larger dictionary at the same alpha, averaged (NaN for the largest)."""
    reference_size: int | None = None
    """Size the ratios refer to (G for toy data, the MLP width for a language model)."""
    logs: list[TrainLog] = field(default_factory=list)
    """One training log per size (its instances are the L1 values)."""
    dictionaries: list[np.ndarray] | None = None
    """Per size, the (L, J, d_in) unit-norm decoder rows as float16; None if not kept."""
    config: dict = field(default_factory=dict)
    """Everything the grid was trained with (the cache key is made from it)."""
    seconds: float = 0.0
    """Training time (of the run that produced the cache, if loaded)."""
    from_cache: bool = False
    """True when this result was loaded from disk instead of trained."""
    saes: list[SAE] | None = None
    """Per size, the trained stacked SAE (instances = L1 values), with ``keep_saes=True``;
    never cached (None when loaded from disk)."""

    # ---- shapes and labels -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return len(self.d_sae_values), len(self.l1_values)

    @property
    def size_ratios(self) -> np.ndarray | None:
        """(S,) J / reference_size, or None when there is no reference size."""
        return None if self.reference_size is None else self.d_sae_values / self.reference_size

    def size_label(self, i: int) -> str:
        """'2x' (with a reference size) or 'J=1024'."""
        r = self.size_ratios
        return f"{r[i]:g}x" if r is not None else f"J={int(self.d_sae_values[i])}"

    # ---- derived diagnostics ---------------------------------------------------------
    @property
    def std_log_recon(self) -> np.ndarray:
        """(S, L) log reconstruction loss, standardized over the grid."""
        return standardized_log(self.recon_loss)

    @property
    def std_log_l1(self) -> np.ndarray:
        """(S, L) log L1 loss, standardized over the grid (NaN where the L1 loss is 0)."""
        return standardized_log(self.l1_loss)

    @property
    def ssll(self) -> np.ndarray:
        """(S, L) summed standardized log losses (NaN where the L1 loss is 0)."""
        return self.std_log_recon + self.std_log_l1

    def metric(self, name: str) -> np.ndarray:
        """One (S, L) grid by name: any of METRICS, or std_log_recon, std_log_l1, ssll."""
        if name in METRICS or name in ("std_log_recon", "std_log_l1", "ssll"):
            return np.asarray(getattr(self, name))
        raise ValueError(f"unknown metric {name!r}: use one of {METRICS + ('std_log_recon', 'std_log_l1', 'ssll')}")

    def index(self, d_sae: int, l1: float) -> tuple[int, int]:
        """Grid position of the cell with size ``d_sae`` and L1 ``l1`` (nearest in log alpha)."""
        hits = np.flatnonzero(self.d_sae_values == d_sae)
        if hits.size == 0:
            raise ValueError(f"size {d_sae} is not in the grid; sizes are {self.d_sae_values.tolist()}")
        j = int(np.argmin(np.abs(np.log(self.l1_values) - math.log(l1))))
        return int(hits[0]), j

    def dictionary(self, i: int, j: int) -> torch.Tensor:
        """The (J, d_in) learned dictionary of cell (size index i, L1 index j), float32."""
        if self.dictionaries is None:
            raise ValueError("this grid was run with keep_dictionaries=False: rerun it with True")
        return torch.from_numpy(self.dictionaries[i][j].astype(np.float32))

    # ---- tables ----------------------------------------------------------------------
    def to_rows(self) -> list[dict]:
        """One dict per cell: size, ratio, alpha, every metric and the diagnostics."""
        extra = {"std_log_recon": self.std_log_recon, "std_log_l1": self.std_log_l1, "ssll": self.ssll}
        rows = []
        for i, J in enumerate(self.d_sae_values):
            for j, alpha in enumerate(self.l1_values):
                row = {"d_sae": int(J), "ratio": None if self.reference_size is None else float(J / self.reference_size),
                       "l1": float(alpha)}
                row.update({k: float(getattr(self, k)[i, j]) for k in METRICS})
                row.update({k: float(v[i, j]) for k, v in extra.items()})
                rows.append(row)
        return rows

    def format_table(self, columns: Sequence[str] = ("recon_loss", "l1_loss", "l0", "dead",
                                                        "mmcs_ground_truth", "mmcs_larger", "ssll")) -> str:
        """A plain-text table of the grid, one line per cell."""
        head = f"{'size':>8} {'alpha':>8} " + " ".join(f"{c[:12]:>12}" for c in columns)
        lines = [head, "-" * len(head)]
        for i in range(self.shape[0]):
            for j, alpha in enumerate(self.l1_values):
                vals = " ".join(f"{_fmt(self.metric(c)[i, j]):>12}" for c in columns)
                lines.append(f"{self.size_label(i):>8} {alpha:>8.3g} {vals}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        S, L = self.shape
        return (f"GridResult({S} sizes {self.d_sae_values.tolist()} x {L} L1 values "
                f"{[float(f'{a:.3g}') for a in self.l1_values]}, from_cache={self.from_cache})")


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    return f"{int(v)}" if float(v).is_integer() and abs(v) < 1e9 else f"{v:.4g}"


# --------------------------------------------------------------------------------------
# The diagnostics, as plain functions of the grid's numbers
# --------------------------------------------------------------------------------------
def standardized_log(values: np.ndarray) -> np.ndarray:
    """log(values) minus its mean, over its standard deviation, across the whole grid.

    A loss of exactly 0 (an L1 loss when every latent is dead) has no logarithm: it is NaN
    here and left out of the mean and the standard deviation, as in the report.
    """
    values = np.asarray(values, dtype=np.float64)
    logs = np.full(values.shape, np.nan)
    ok = np.isfinite(values) & (values > 0)
    logs[ok] = np.log(values[ok])
    if ok.sum() < 2:
        return np.full(values.shape, np.nan)
    mu, sd = logs[ok].mean(), logs[ok].std()
    return (logs - mu) / (sd if sd > 0 else 1.0)


def ssll(recon_loss: np.ndarray, l1_loss: np.ndarray) -> np.ndarray:
    """Summed standardized log losses: standardized log recon + standardized log L1."""
    return standardized_log(recon_loss) + standardized_log(l1_loss)


def mmcs_with_larger(dictionaries: Sequence[torch.Tensor]) -> np.ndarray:
    """(S, L) MMCS of each dictionary with every larger one at the same alpha, averaged.

    dictionaries[i]: (L, J_i, d) with J ascending. The smaller dictionary is the
    reference (each of its features looks for its best match in the larger one). The
    largest size has nothing larger: NaN.
    """
    S, L = len(dictionaries), dictionaries[0].shape[0]
    out = np.full((S, L), np.nan)
    for i in range(S - 1):
        for j in range(L):  # one alpha at a time: the (J_i, J_k) cosine matrices can be large
            vals = [float(mmcs_between(dictionaries[i][j].float(), dictionaries[k][j].float())) for k in range(i + 1, S)]
            out[i, j] = np.mean(vals)
    return out


# --------------------------------------------------------------------------------------
# Training the grid (cached)
# --------------------------------------------------------------------------------------
def run_grid(
    sample_fn: Callable[[int], torch.Tensor],
    d_in: int,
    d_sae_values: Sequence[float],
    l1_values: Sequence[float],
    steps: int,
    *,
    reference_size: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    decoder_bias: bool = False,
    dead_window: int = 500,
    l1_divide_by_d_sae: bool = True,
    seed: int = 0,
    ground_truth: torch.Tensor | None = None,
    keep_dictionaries: bool = True,
    keep_saes: bool = False,
    cache_name: str | None = None,
    config_for_key: dict | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> GridResult:
    """Train one SAE per (dictionary size, L1 coefficient) and measure the diagnostics.

    Each size's L1 values train together as one stacked SAE (all see the same batches).
    ``d_sae_values`` are sizes J, or multiples of ``reference_size`` when it is given
    (``[0.5, 1, 2]`` with ``reference_size=512`` means J = 256, 512, 1024).
    ``ground_truth`` (G, d_in), when known, fills the ``mmcs_ground_truth`` column.
    ``keep_saes`` keeps the trained models on the result (to splice into a language model);
    they are not cached, so it cannot be combined with ``cache_name``.

    With ``cache_name``, the result is stored under ``cache_dir("diagnostics")`` and
    reused when the same grid is asked for again. The key is made from every argument
    above plus ``config_for_key``, which must describe the data ``sample_fn`` draws
    (e.g. ``asdict(GroundTruthConfig(...))``, or the model, layer and token count of a
    language model's activations): the sampler itself cannot be hashed.
    """
    sizes_J = _resolve_sizes(d_sae_values, reference_size)
    alphas = tuple(float(a) for a in l1_values)
    if not alphas or min(alphas) <= 0 or list(alphas) != sorted(set(alphas)):
        raise ValueError(f"l1_values must be positive, distinct and ascending, got {list(l1_values)}")
    if steps <= dead_window:
        raise ValueError(
            f"steps={steps} must exceed dead_window={dead_window}: a latent can only count as dead "
            "after it has gone dead_window batches without firing"
        )
    if ground_truth is not None and (ground_truth.dim() != 2 or ground_truth.shape[1] != d_in):
        raise ValueError(f"ground_truth must be (G, {d_in}) feature rows, got {tuple(ground_truth.shape)}")
    if keep_saes and cache_name is not None:
        raise ValueError("keep_saes=True returns models that the cache does not store: drop cache_name")
    dev = get_device(device)
    config = {
        "version": _CACHE_VERSION, "d_in": d_in, "d_sae_values": list(sizes_J), "l1_values": list(alphas),
        "steps": steps, "batch_size": batch_size, "lr": lr, "decoder_bias": decoder_bias,
        "dead_window": dead_window, "l1_divide_by_d_sae": l1_divide_by_d_sae, "seed": seed,
        "reference_size": reference_size, "keep_dictionaries": keep_dictionaries,
        "ground_truth": None if ground_truth is None else _tensor_digest(ground_truth),
        "data": config_for_key or {},
    }
    path = None
    if cache_name is not None:
        path = cache_dir("diagnostics") / f"{cache_name}-{cache_key(config)}"
        if (path / "grid.json").is_file():
            return load_grid(path)

    S, L = len(sizes_J), len(alphas)
    cost = np.array([J * L for J in sizes_J], dtype=float)  # one step's work grows with J x L
    bar = tqdm(total=float(cost.sum() * steps), disable=not progress, desc="diagnostic grid",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    logs, dicts, saes = [], [], []
    for i, J in enumerate(sizes_J):
        bar.set_description(f"diagnostic grid: size {_label(J, reference_size)} ({i + 1}/{S})")
        cfg = SAEConfig(d_in=d_in, d_sae=J, l1_coeffs=alphas, lr=lr, batch_size=batch_size, steps=steps,
                        decoder_bias=decoder_bias, l1_divide_by_d_sae=l1_divide_by_d_sae,
                        dead_window=dead_window, seed=seed)
        sae = SAE(cfg, device=dev)
        # train_sae draws batches in chunks through sample_fn; counting the rows drawn moves
        # one bar for the whole grid (a few steps ahead of training, by the prefetch).
        done = [0]

        def counted(n: int, _w: float = cost[i] / batch_size) -> torch.Tensor:
            take = min(n, steps * batch_size - done[0])
            done[0] += n
            bar.update(max(take, 0) * _w)
            return sample_fn(n)

        logs.append(train_sae(sae, counted, steps=steps, progress=False))
        with torch.no_grad():
            dicts.append(sae.decoder_directions().detach())  # (L, J, d_in)
        if keep_saes:
            saes.append(sae)
    bar.close()

    final = [log.final() for log in logs]
    grid = {k: np.stack([f[k] for f in final]).astype(np.float64) for k in ("recon_loss", "l1_loss", "l0", "dead")}
    gt = np.full((S, L), np.nan)
    if ground_truth is not None:
        F = ground_truth.to(dev, torch.float32)
        gt = np.stack([mmcs(D, F).cpu().numpy() for D in dicts])  # (S, L)
    result = GridResult(
        d_sae_values=np.array(sizes_J), l1_values=np.array(alphas), **grid,
        mmcs_ground_truth=gt, mmcs_larger=mmcs_with_larger(dicts), reference_size=reference_size,
        logs=logs, dictionaries=[d.cpu().half().numpy() for d in dicts] if keep_dictionaries else None,
        config=config, seconds=float(sum(log.seconds for log in logs)), saes=saes if keep_saes else None,
    )
    if path is not None:
        save_grid(result, path)
    return result


def _resolve_sizes(values: Sequence[float], reference_size: int | None) -> tuple[int, ...]:
    if reference_size is not None:
        if reference_size < 1:
            raise ValueError(f"reference_size must be a positive number of features, got {reference_size}")
        sizes = tuple(int(round(float(r) * reference_size)) for r in values)
    else:
        if any(float(v) != int(v) for v in values):
            raise ValueError(
                f"d_sae_values {list(values)} are not whole numbers: pass sizes J, or ratios together "
                "with reference_size (e.g. d_sae_values=[0.5, 1, 2], reference_size=512)"
            )
        sizes = tuple(int(v) for v in values)
    if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
        raise ValueError(f"dictionary sizes must be positive, distinct and ascending, got {list(sizes)}")
    return sizes


def _label(J: int, reference_size: int | None) -> str:
    return f"{J / reference_size:g}x" if reference_size else f"J={J}"


def _tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# Saving and loading (numbers and logs in one .npz, the config in JSON)
# --------------------------------------------------------------------------------------
def save_grid(result: GridResult, folder) -> None:
    """Write ``result`` to ``folder`` (grid.npz, dictionaries.npz, grid.json), atomically."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(result, k) for k in ("d_sae_values", "l1_values") + METRICS}
    for i, log in enumerate(result.logs):
        for k in ("steps", "recon_loss", "l1_loss", "l0", "dead", "steps_since_fired"):
            arrays[f"log{i}_{k}"] = getattr(log, k)
    with atomic_write(folder / "grid.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    if result.dictionaries is not None:
        with atomic_write(folder / "dictionaries.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f"size{i}": d for i, d in enumerate(result.dictionaries)})
    meta = {"config": result.config, "reference_size": result.reference_size, "seconds": result.seconds,
            "log_meta": [{"seconds": log.seconds, "examples": log.examples} for log in result.logs]}
    with atomic_write(folder / "grid.json") as tmp:  # written last: its presence means complete
        tmp.write_text(json.dumps(meta, indent=1))


def load_grid(folder) -> GridResult:
    """Read a grid written by ``save_grid``."""
    from pathlib import Path

    folder = Path(folder)
    meta = json.loads((folder / "grid.json").read_text())
    with np.load(folder / "grid.npz") as z:
        arrays = {k: z[k] for k in z.files}
    alphas = tuple(float(a) for a in arrays["l1_values"])
    logs = []
    for i, lm in enumerate(meta["log_meta"]):
        log = TrainLog(l1_coeffs=alphas, seconds=lm["seconds"], examples=lm["examples"])
        for k in ("steps", "recon_loss", "l1_loss", "l0", "dead", "steps_since_fired"):
            setattr(log, k, arrays[f"log{i}_{k}"])
        logs.append(log)
    dicts = None
    if (folder / "dictionaries.npz").is_file():
        with np.load(folder / "dictionaries.npz") as z:
            dicts = [z[f"size{i}"] for i in range(len(arrays["d_sae_values"]))]
    return GridResult(
        **{k: arrays[k] for k in ("d_sae_values", "l1_values") + METRICS},
        reference_size=meta["reference_size"], logs=logs, dictionaries=dicts,
        config=meta["config"], seconds=meta["seconds"], from_cache=True,
    )


# --------------------------------------------------------------------------------------
# Notebook 03's toy-data grid (also read by notebook 04 for the side-by-side comparison)
# --------------------------------------------------------------------------------------
def toy_grid(correlated: bool = True, decay: float = 0.99, scale: str | None = None,
             size_ratios: Sequence[float] | None = None, l1_values: Sequence[float] | None = None,
             progress: bool = True) -> tuple[GridResult, "GroundTruthData"]:
    """The (size x L1) grid on ground-truth toy data at this ``TUTORIAL_SCALE``, cached.

    Returns the grid and the data generator (whose ``features`` are the ground truth).
    ``correlated`` and ``decay`` switch the report's two data properties; any change is a
    new cache entry, so every variant is trained once per machine.
    """
    from dataclasses import asdict

    from helpers.data import GroundTruthConfig, GroundTruthData
    from helpers.device import sizes

    s = sizes(scale)
    cfg = GroundTruthConfig(n_features=s.gt_features, d=s.gt_dim, correlated=correlated, decay=decay, seed=0)
    data = GroundTruthData(cfg)
    grid = run_grid(
        data.sample, s.gt_dim, s.sae_dict_ratios if size_ratios is None else size_ratios,
        s.grid_l1_values if l1_values is None else l1_values,
        s.grid_steps, reference_size=s.gt_features, lr=s.grid_lr, dead_window=s.dead_window,
        ground_truth=data.features, cache_name=f"toy-{s.scale}", config_for_key=asdict(cfg),
        progress=progress,
    )
    return grid, data


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
PANELS = {
    "mmcs_ground_truth": ("MMCS with the ground truth", "viridis", (0.0, 1.0)),
    "dead": (f"dead latents (capped at {DEAD_CAP})", "magma", (0, DEAD_CAP)),
    "ssll": ("summed standardized log losses (SSLL)", "coolwarm", None),
    "mmcs_larger": ("MMCS with larger dictionaries", "viridis", (0.0, 1.0)),
    "l0": ("L0: active latents per input", "cividis", None),
    "std_log_recon": ("standardized log reconstruction loss", "coolwarm", None),
    "std_log_l1": ("standardized log L1 loss", "coolwarm", None),
}
"""Heatmap title, colormap and colour range for each metric ``plot_diagnostics`` can draw."""


def plot_diagnostics(grid: GridResult, metrics: Sequence[str] = ("mmcs_ground_truth", "dead", "ssll", "mmcs_larger"),
                     title: str = "", marks: dict[str, tuple[int, float]] | None = None, annotate: bool = True):
    """Heatmaps of ``metrics`` side by side, sharing axes: L1 coefficient (x) by size (y).

    ``marks`` maps a label to a (d_sae, l1) cell to circle in every panel (e.g. the
    suggestions of ``suggest_hyperparameters``). Missing values (log 0, no larger
    dictionary, no ground truth) are drawn grey. Returns the figure.
    """
    import matplotlib.pyplot as plt

    for m in metrics:
        if m not in PANELS:
            raise ValueError(f"cannot draw {m!r}: choose from {sorted(PANELS)}")
    S, L = grid.shape
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 0.6, 0.45 * S + 2.2),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)
    xlabels = [f"{a:.2g}" for a in grid.l1_values]
    ylabels = [grid.size_label(i) for i in range(S)]
    for ax, m in zip(axes[0], metrics):
        name, cmap, lims = PANELS[m]
        vals = np.asarray(grid.metric(m), dtype=float)
        if m == "dead":
            vals = np.minimum(vals, DEAD_CAP)
        cm = plt.get_cmap(cmap).copy()
        cm.set_bad("lightgrey")
        vmin, vmax = lims if lims else (np.nanmin(vals) if np.isfinite(vals).any() else 0, np.nanmax(vals) if np.isfinite(vals).any() else 1)
        im = ax.imshow(np.ma.masked_invalid(vals), origin="lower", aspect="auto", cmap=cm, vmin=vmin, vmax=vmax)
        fig.colorbar(im, ax=ax, shrink=0.85)
        if annotate and S * L <= 80:
            for i in range(S):
                for j in range(L):
                    v = vals[i, j]
                    txt = "" if not np.isfinite(v) else (f"{int(v)}" if m == "dead" else f"{v:.2f}")
                    r, g, b, _ = cm(im.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                    ax.text(j, i, txt, ha="center", va="center", fontsize=6.5,  # readable on any cell colour
                            color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
        for label, (J, a) in (marks or {}).items():
            i, j = grid.index(J, a)
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2, ec="red"))
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(L), xlabels, rotation=90, fontsize=7)
        ax.set_xlabel("L1 coefficient alpha")
    axes[0][0].set_yticks(range(S), ylabels, fontsize=8)
    axes[0][0].set_ylabel("dictionary size" + (" (x reference)" if grid.reference_size else ""))
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------
# From diagnostics to a choice
# --------------------------------------------------------------------------------------
class Suggestion(NamedTuple):
    """One method's choice of hyperparameters."""

    method: str
    d_sae: int
    l1: float
    reason: str

    def describe(self, reference_size: int | None = None) -> str:
        size = f"{self.d_sae / reference_size:g}x" if reference_size else f"J={self.d_sae}"
        return f"{self.method:<22} size {size:>5}, L1 {self.l1:<7.3g} {self.reason}"


class Suggestions(NamedTuple):
    """What each diagnostic suggests, and the choice they agree on."""

    dead: Suggestion
    stickiness: Suggestion
    mmcs_larger: Suggestion
    agreed: Suggestion

    def describe(self, reference_size: int | None = None) -> str:
        return "\n".join(s.describe(reference_size) for s in self)


def _dead_free_run(dead_row: np.ndarray) -> int:
    """Index of the last alpha before the first cell with dead latents (-1 if the first has some)."""
    bad = np.flatnonzero(np.asarray(dead_row) > 0)
    return (len(dead_row) if bad.size == 0 else int(bad[0])) - 1


def loss_steepness(grid: GridResult) -> np.ndarray:
    """(S, L) how fast the standardized log reconstruction loss climbs per decade of alpha.

    The central difference along the L1 axis, per decade of alpha (grids need not be evenly
    spaced). Small values are the report's 'sticky' basin: more L1 pressure, yet the
    reconstruction barely suffers. A cell only counts while the L1 loss is in its own basin
    (positive, and not past its peak, after which it falls as latents die): elsewhere, and at the first
    and last alpha, the value is NaN.
    """
    r, l = grid.std_log_recon, grid.std_log_l1
    la = np.log10(np.asarray(grid.l1_values, dtype=float))
    slope = np.abs(np.diff(r, axis=1)) / np.diff(la)  # (S, L-1) between neighbours
    out = np.full(r.shape, np.nan)
    out[:, 1:-1] = (slope[:, :-1] + slope[:, 1:]) / 2
    # The L1 loss rises with alpha until latents start dying, then falls: the basin is
    # everything up to its peak (after it, reconstruction is flat only because it is lost).
    cols = np.arange(r.shape[1])[None, :]
    peak = np.array([np.nanargmax(row) if np.isfinite(row).any() else -1 for row in l])[:, None]
    out[~(np.isfinite(l) & (cols <= peak))] = np.nan
    return out


def suggest_hyperparameters(grid: GridResult) -> Suggestions:
    """Apply the report's three diagnostics to ``grid``; none of them reads the ground truth.

    * dead latents: the largest dictionary, with the largest L1 coefficient, that has no
      dead latent (every smaller L1 at that size must be dead-free too);
    * loss stickiness: the cell where the reconstruction loss is flattest along the L1 axis
      while the L1 loss is still in its basin (``loss_steepness``): more sparsity, for free;
    * MMCS with larger dictionaries: the cell where it peaks (among cells with L0 >= 1).

    The agreed choice takes the size most methods picked (MMCS with larger dictionaries
    breaks ties: it was the most reliable on toy data in the report) and the geometric mean
    of the L1 values those methods gave for it, snapped to the grid (a tie goes to the
    smaller L1, further from where latents die).
    """
    S, L = grid.shape
    Js, alphas = grid.d_sae_values, grid.l1_values

    # 1. dead latents
    runs = np.array([_dead_free_run(grid.dead[i]) for i in range(S)])
    if runs.max() < 0:
        i1, j1 = 0, 0
        why1 = "(every cell has dead latents: the grid starts too large; fell back to its corner)"
    else:
        i1 = int(max(range(S), key=lambda i: (runs[i], i)))  # largest alpha first, then the larger size
        j1 = int(runs[i1])
        why1 = f"largest dead-free L1 of any size ({int(grid.dead[i1, j1])} dead over the last window)"
    dead = Suggestion("dead latents", int(Js[i1]), float(alphas[j1]), why1)

    # 2. loss stickiness
    steep = loss_steepness(grid)
    if np.isfinite(steep).any():
        i2, j2 = np.unravel_index(np.nanargmin(steep), steep.shape)
        why2 = f"flattest reconstruction loss along L1 ({steep[i2, j2]:.2f} std per decade)"
    else:
        i2, j2 = 0, 0
        why2 = "(grid too small to measure stickiness: need 3 L1 values)"
    sticky = Suggestion("loss stickiness", int(Js[i2]), float(alphas[j2]), why2)

    # 3. MMCS with larger dictionaries
    # Only dictionaries that still encode something (on average at least one active latent
    # per input): where the L1 penalty silenced everything, two dictionaries can "agree" on
    # leftover directions that no input uses.
    ml = np.where(grid.l0 >= 1.0, grid.mmcs_larger, np.nan)
    if np.isfinite(ml).any():
        i3, j3 = np.unravel_index(np.nanargmax(ml), ml.shape)
        why3 = f"highest agreement with larger dictionaries (MMCS {ml[i3, j3]:.3f})"
    else:
        i3, j3 = 0, 0
        why3 = "(one size only: nothing larger to compare with)"
    larger = Suggestion("MMCS with larger", int(Js[i3]), float(alphas[j3]), why3)

    picks = [(i1, j1), (i2, j2), (i3, j3)]
    votes = {i: sum(p[0] == i for p in picks) for i, _ in picks}
    top = max(votes.values())
    i_agreed = i3 if votes[i3] == top else max((i for i in votes if votes[i] == top), key=lambda i: i)
    chosen = [j for i, j in picks if i == i_agreed]
    log_alpha = np.mean([math.log(alphas[j]) for j in chosen])
    j_agreed = int(np.argmin(np.abs(np.log(alphas) - log_alpha)))
    names = [s.method for s, (i, _) in zip((dead, sticky, larger), picks) if i == i_agreed]
    agreed = Suggestion("agreed", int(Js[i_agreed]), float(alphas[j_agreed]),
                        f"size chosen by {len(names)} of 3 ({', '.join(names)})")
    return Suggestions(dead, sticky, larger, agreed)


def plot_loss_basins(grid: GridResult, d_sae: int | None = None):
    """Reconstruction loss, L1 loss and ground-truth MMCS against alpha at one size (log axes).

    The report's figures 5 and 6: the 'sticky' basin is where both losses stay flat while
    alpha grows. Default size: the reference size (1x) if it is in the grid.
    """
    import matplotlib.pyplot as plt

    if d_sae is None:
        d_sae = grid.reference_size if grid.reference_size in grid.d_sae_values else int(grid.d_sae_values[0])
    i, _ = grid.index(d_sae, float(grid.l1_values[0]))
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    ax.loglog(grid.l1_values, grid.recon_loss[i], "o-", label="reconstruction loss")
    l1 = np.where(grid.l1_loss[i] > 0, grid.l1_loss[i], np.nan)
    ax.loglog(grid.l1_values, l1, "s-", label="L1 loss (0: not drawn)")
    ax.set_xlabel("L1 coefficient alpha")
    ax.set_ylabel("final loss (log scale)")
    ax.set_title(f"Losses at size {grid.size_label(i)}: look for flat basins")
    if np.isfinite(grid.mmcs_ground_truth[i]).any():
        ax2 = ax.twinx()
        ax2.plot(grid.l1_values, grid.mmcs_ground_truth[i], "k--", alpha=0.6, label="MMCS with ground truth")
        ax2.set_ylabel("MMCS with the ground truth")
        ax2.set_ylim(0, 1.05)
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_mmcs_larger_by_size(grid: GridResult):
    """MMCS with larger dictionaries against size, one line per alpha (method 3 as curves)."""
    import matplotlib.pyplot as plt

    S, L = grid.shape
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    colors = plt.get_cmap("plasma")(np.linspace(0, 0.9, L))
    for j in range(L):
        ax.plot(range(S - 1), grid.mmcs_larger[:-1, j], "o-", color=colors[j], label=f"alpha={grid.l1_values[j]:.2g}")
    ax.set_xticks(range(S - 1), [grid.size_label(i) for i in range(S - 1)])
    ax.set_xlabel("dictionary size (compared with every larger one)")
    ax.set_ylabel("mean MMCS with larger dictionaries")
    ax.set_ylim(0, 1.02)
    ax.set_title("Dictionaries agree most at the right size")
    ax.legend(fontsize=7, ncol=2)
    return fig


def cell_explorer(grid: GridResult, truth: torch.Tensor | None = None):
    """Pick a (size, L1) cell with two dropdowns; see its training curves and its match to ``truth``."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from helpers.metrics import best_matches

    def draw(size_index: int, l1_index: int) -> None:
        i, j = size_index, l1_index
        log = grid.logs[i]
        fig, axes = plt.subplots(1, 3 if truth is not None else 2, figsize=(12, 3.2), constrained_layout=True)
        axes[0].semilogy(log.steps, log.recon_loss[:, j], label="reconstruction")
        axes[0].semilogy(log.steps, np.maximum(log.l1_loss[:, j], 1e-12), label="L1 term")
        axes[0].set(xlabel="training step", ylabel="loss (log scale)", title="losses during training")
        axes[0].legend(fontsize=8)
        axes[1].plot(log.steps, log.l0[:, j], label="L0 (active latents)")
        axes[1].plot(log.steps, log.dead[:, j], label="dead latents")
        axes[1].set(xlabel="training step", ylabel="count", title="sparsity and dead latents")
        axes[1].legend(fontsize=8)
        if truth is not None and grid.dictionaries is not None:
            m = best_matches(grid.dictionary(i, j), truth.detach().cpu().float())
            axes[2].hist(m.cosine.numpy(), bins=np.linspace(0, 1, 41), color="tab:green")
            axes[2].set(xlabel="best cosine with a learned feature", ylabel="true features",
                        title=f"ground truth recovery: MMCS {float(m.cosine.mean()):.3f}")
        fig.suptitle(f"size {grid.size_label(i)}, alpha {grid.l1_values[j]:.3g}: "
                     f"L0 {grid.l0[i, j]:.1f}, dead {int(grid.dead[i, j])}")
        plt.show()

    size_dd = widgets.Dropdown(options=[(grid.size_label(i), i) for i in range(grid.shape[0])], description="size")
    l1_dd = widgets.Dropdown(options=[(f"{a:.3g}", j) for j, a in enumerate(grid.l1_values)], description="alpha")
    return widgets.interact(draw, size_index=size_dd, l1_index=l1_dd)
