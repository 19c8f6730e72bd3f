"""What every figure of the course shares: the resolution, tensors as arrays, and one table of
how each quantity is named and coloured, read by the static (matplotlib) figures and their
interactive (plotly, ipywidgets) companions alike."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from helpers.diagnostics.result import DEAD_CAP

DPI = 80
"""The resolution of every matplotlib figure of the course: figures are stored in the notebooks,
and a modest one keeps them small."""


def to_numpy(t) -> np.ndarray:
    """A tensor (any device, any float dtype) or array-like as a NumPy array, for plotting."""
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class Metric(NamedTuple):
    """How one quantity is named and drawn."""

    label: str
    """Its full name: a heatmap's panel title, an axis title, a legend entry."""
    short: str
    """Its name where room is short: the panels of the interactive grid, hover text, the slider explorers."""
    cmap: str
    """The matplotlib colormap of its static heatmap (``plot_diagnostics``)."""
    limits: tuple[float, float] | None
    """The fixed colour range of its static heatmap (None: the data's own range)."""
    colorscale: str
    """The plotly colour scale of its interactive heatmap (``grid_heatmaps``)."""
    log: bool
    """Whether its interactive heatmap is coloured by log10 of the value (it spans decades)."""


METRIC_STYLE = {
    "l0": Metric("L0: active latents per input", "L0 (active latents)", "cividis", None, "Viridis", True),
    "dead": Metric(f"dead latents (capped at {DEAD_CAP})", "dead latents", "magma", (0, DEAD_CAP), "Reds", False),
    "recon_loss": Metric("reconstruction loss", "reconstruction loss", "viridis", None, "Blues", True),
    "l1_loss": Metric("L1 loss", "L1 loss", "viridis", None, "Oranges", True),
    "ssll": Metric("summed standardized log losses (SSLL)", "SSLL", "coolwarm", None, "Purples", False),
    "mmcs_ground_truth": Metric("MMCS with the ground truth", "MMCS with the truth", "viridis", (0.0, 1.0),
                                "Greens", False),
    "mmcs_larger": Metric("MMCS with larger dictionaries", "MMCS with larger", "viridis", (0.0, 1.0), "Greens", False),
    "std_log_recon": Metric("standardized log reconstruction loss", "std. log recon. loss", "coolwarm", None,
                            "RdBu_r", False),
    "std_log_l1": Metric("standardized log L1 loss", "std. log L1 loss", "coolwarm", None, "RdBu_r", False),
}
"""Every per-cell number of a diagnostic grid (``helpers.diagnostics.GridResult.metric``) by name."""

L1_AXIS = "L1 coefficient alpha"
SIZE_AXIS = "dictionary size"
"""The axis titles of the L1 coefficient and of the dictionary size, in every figure that has them."""


def check_metrics(metrics) -> None:
    """Raise naming the unknown entry of ``metrics`` and the names that can be drawn."""
    for m in metrics:
        if m not in METRIC_STYLE:
            raise ValueError(f"metrics: unknown {m!r}, use some of {sorted(METRIC_STYLE)}")
