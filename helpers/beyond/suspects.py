"""The report's suspects: toy data with one difference from the report's recipe switched on,
and the signature of the language-model grid that each might reproduce.

The report's language-model heatmaps differ from its toy ones in three ways (its figures and
notebook 04's grid): (1) no dead latents even in dictionaries far larger than the MLP, (2) MMCS
between dictionaries of different sizes never high (the report: never above about 0.4),
(3) no size singled out by the summed standardized log losses (SSLL). ``lm_signature`` measures
all three on any grid, by rules fixed in advance, so a suspect "reproduces" a feature by a
number, never by eye.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import NamedTuple, Sequence

import numpy as np

from helpers.data import GroundTruthConfig, GroundTruthData
from helpers.diagnostics.grid import run_grid
from helpers.diagnostics.result import GridResult
from helpers.diagnostics.rules import random_baseline_with_larger
from helpers.metrics import random_mmcs_baseline
from helpers.sae import SAEConfig

SUSPECTS: dict[str, dict] = {
    "report's data": {},
    "feature jitter": {"jitter": 1.0},
    "background noise": {"noise_std": "rms"},
    "positive-only features": {"nonnegative": True},
    "G/h = 8": {"superposition": 8},
    "G/h = 16": {"superposition": 16},
    "Zipf frequencies": {"frequency": "zipf", "zipf_exponent": 0.5},
    "strong correlations": {"corr_strength": 4.0},
    "hierarchy": {"n_parents": "quarter"},
}
"""Each suspect as changes to the report's GroundTruthConfig (see ``suspect_config``)."""

SIGNATURE = {
    "no dead latents": "no latent of any dictionary larger than 1x dead at an alpha where the smallest has none",
    "low MMCS between dictionaries": "MMCS with larger dictionaries never closes half the gap from random to 1",
    "no SSLL peak": "SSLL nowhere peaks at an interior alpha by more than 0.5 (grid standard deviations) above both ends",
}
"""The three features of the language model's heatmaps, and the rule ``lm_signature`` applies."""


def suspect_config(base: GroundTruthConfig, name: str) -> GroundTruthConfig:
    """``base`` with the suspect ``name`` switched on.

    Jitter 1 perturbs each occurrence by a vector as long as the direction (cosine about 0.7
    with it after renormalising); "rms" noise has the data's per-dimension RMS (measured on
    4096 samples), a signal-to-noise ratio of 1 per dimension;
    superposition s keeps G and sets h = G / s; "quarter" parents put a quarter of the features
    into parent-children groups of 1 parent and 3 children.
    """
    if name not in SUSPECTS:
        raise ValueError(f"unknown suspect {name!r}: choose from {list(SUSPECTS)}")
    changes = dict(SUSPECTS[name])
    if changes.get("noise_std") == "rms":
        x = GroundTruthData(base, device="cpu").sample(4096)
        changes["noise_std"] = float(x.pow(2).mean().sqrt())
    if "superposition" in changes:
        changes["d"] = max(1, base.n_features // changes.pop("superposition"))
    if changes.get("n_parents") == "quarter":
        changes.update(n_parents=base.n_features // 16, children_per_parent=3)
    return replace(base, **changes)


class SuspectResult(NamedTuple):
    """One suspect's grid."""

    name: str
    """Which suspect (a key of SUSPECTS)."""
    data: GroundTruthData
    """The generator (its ``features`` are the ground truth)."""
    grid: GridResult
    """The (size x L1) grid trained on it."""


def suspect_grid(name: str, base_data: GroundTruthConfig, base_sae: SAEConfig, size_ratios: Sequence[float],
                 l1_values: Sequence[float], cache_prefix: str | None = "beyond-suspect",
                 progress: bool = False) -> SuspectResult:
    """Train (or load) the diagnostic grid on toy data with suspect ``name`` switched on."""
    cfg = suspect_config(base_data, name)
    data = GroundTruthData(cfg)
    sae = replace(base_sae, d_in=cfg.d)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("/", "")).strip("-")  # "G/h = 8" -> "gh-8"
    cache = None if cache_prefix is None else f"{cache_prefix}-{slug}"
    grid = run_grid(data.sample, sae, size_ratios, l1_values, reference_size=cfg.n_features,
                    ground_truth=data.features, cache_name=cache, cache_description=cfg, progress=progress)
    return SuspectResult(name, data, grid)


def lm_signature(grid: GridResult) -> dict[str, float | bool]:
    """The three features of the language-model signature, measured on ``grid``.

    * dead: the largest share of dead latents among dictionaries larger than 1x (any size but
      the smallest without a reference size), at the alphas where the smallest dictionary has
      none (so that a too-strong penalty does not count);
    * MMCS between dictionaries: its best value (over cells with L0 >= 1) as a share of the way
      from unrelated random dictionaries of those sizes to 1;
    * recovery (not part of the signature; toy data only): the best MMCS with the truth, and
      the same as a share of the way from random unit vectors of each size to 1;
    * SSLL peak: how far SSLL at an interior alpha rises above both the smallest and the largest
      alpha at the same size (on toy data it climbs with alpha until latents start to die, then
      falls), the highest over sizes.
    """
    S, L = grid.shape
    J = np.asarray(grid.d_sae_values, dtype=float)
    ref = grid.reference_size if grid.reference_size else J[0]
    dead = np.asarray(grid.dead, dtype=float)
    cols = dead[0] == 0
    big = J > ref
    dead_share = float(np.nanmax(dead[big][:, cols] / J[big, None])) if big.any() and cols.any() else 0.0
    d_in = grid.config.get("sae", {}).get("d_in") if isinstance(grid.config, dict) else None
    rand = random_baseline_with_larger(J, int(d_in)) if d_in else np.zeros(S)
    gap = (np.asarray(grid.mmcs_larger) - rand[:, None]) / (1 - rand[:, None])
    gap[np.asarray(grid.l0) < 1] = np.nan
    best_gap = float(np.nanmax(gap)) if np.isfinite(gap).any() else float("nan")
    ssll = grid.ssll
    peaks = [np.nanmax(row) - max(row[0], row[-1]) for row in ssll if L > 2 and np.isfinite(row[[0, -1]]).all()]
    peak = float(max(peaks)) if peaks else float("nan")
    gt = np.asarray(grid.mmcs_ground_truth, dtype=float)
    G = grid.reference_size
    chance = np.array([random_mmcs_baseline(int(G), int(j), int(d_in)) for j in J]) if d_in and G else np.zeros(S)
    above = (gt - chance[:, None]) / (1 - chance[:, None])
    return {"dead share": dead_share, "MMCS gap closed": best_gap, "SSLL peak": peak,
            "truth above chance": float(np.nanmax(above)) if np.isfinite(above).any() else float("nan"),
            "no dead latents": dead_share == 0, "low MMCS between dictionaries": bool(best_gap < 0.5),
            "no SSLL peak": bool(not peak > 0.5), "best MMCS with truth": float(np.nanmax(grid.mmcs_ground_truth))}


def expected_l0(data: GroundTruthData) -> float:
    """Expected number of active true features per sample, children of a hierarchy included.

    Computed from the feature probabilities (no sampling, so the generator's state is left alone):
    each active parent switches on exactly one child, which adds the parents' probabilities.
    """
    l0 = data.expected_active
    if data.cfg.n_parents:
        l0 += float(data.feature_probabilities[data.parents.to(data.feature_probabilities.device)].sum())
    return float(l0)


def signature_table(results: Sequence[SuspectResult]) -> tuple[list[dict], str]:
    """One row per suspect: the measured numbers and which LM features it reproduces.

    Each row also holds the data's dimension ``h``, its expected number of active features
    ``true L0`` and their ratio ``L0 / h`` (near or above 1 the data are no longer sparse for
    their dimension). A signature feature that no row shows the toy side of (no grid has dead
    latents at all) tests nothing: the text marks it "n/a" and the last column, "all tested",
    combines only the features that were tested.
    """
    rows = []
    for r in results:
        h, l0 = int(r.data.cfg.d), expected_l0(r.data)
        rows.append({"suspect": r.name, "h": h, "true L0": l0, "L0 / h": l0 / h, **lm_signature(r.grid)})
    tested = {k: True for k in SIGNATURE}
    tested["no dead latents"] = any(not row["no dead latents"] for row in rows)
    head = (f"{'suspect':<24}{'h':>5}{'L0/h':>6}{'best MMCS':>10}{'vs chance':>10}{'dead share':>11}{'gap closed':>11}"
            f"{'SSLL peak':>10}   no dead | low MMCS | no SSLL peak | all tested")
    lines = [head, "-" * len(head)]
    for row in rows:
        marks = [("yes" if row[k] else "no") if tested[k] else "n/a" for k in SIGNATURE]
        every = all(row[k] for k in SIGNATURE if tested[k])
        lines.append(f"{row['suspect']:<24}{row['h']:>5}{row['L0 / h']:>6.2f}{row['best MMCS with truth']:>10.3f}"
                     f"{row['truth above chance']:>10.3f}{row['dead share']:>11.3f}{row['MMCS gap closed']:>11.2f}"
                     f"{row['SSLL peak']:>10.2f}   "
                     + " | ".join(f"{m:^{w}}" for m, w in zip(marks, (7, 8, 12)))
                     + f" | {'yes' if every else 'no':^10}")
    if not tested["no dead latents"]:
        lines.append("no dead = n/a: no grid here, the report's data included, has a dead latent beyond 1x, so that feature\n"
                     "cannot tell the suspects apart; 'all tested' combines the other two.")
    return rows, "\n".join(lines)
