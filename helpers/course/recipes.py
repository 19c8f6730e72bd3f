"""The course's training recipes, beside the sizes they read (``helpers.course.sizes``).

* ``toy_recipe()``: the one SAE recipe for the toy data at this ``TUTORIAL_SCALE`` (notebooks
  02, 03, 05 and 06 start from it);
* ``toy_grid()``: notebook 03's (size x L1) grid on that data, trained once and cached (notebooks
  02, 04 and 05 read it too).

Both are re-exported by ``helpers.diagnostics``, where the notebooks import them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from helpers.data import GroundTruthData
    from helpers.diagnostics.result import GridResult
    from helpers.sae import SAEConfig


def toy_recipe(scale: str | None = None, **changes) -> "SAEConfig":
    """The one SAE training recipe for the toy data at this ``TUTORIAL_SCALE`` (J = G, the grid's
    lr, schedule, decoder reset, steps, batch and dead window); ``changes`` replace fields."""
    from dataclasses import replace

    from helpers.course.sizes import sizes
    from helpers.sae import SAEConfig

    s = sizes(scale)
    base = SAEConfig(d_in=s.sae.gt_dim, d_sae=s.sae.gt_features, lr=s.grid.lr, lr_schedule=s.grid.schedule,
                     renorm_decoder=s.grid.renorm, batch_size=s.sae.batch, steps=s.grid.steps,
                     dead_window=s.grid.dead_window)
    return replace(base, **changes)


def toy_grid(correlated: bool = True, decay: float = 0.99, scale: str | None = None,
             size_ratios: Sequence[float] | None = None, l1_values: Sequence[float] | None = None,
             progress: bool = True) -> tuple["GridResult", "GroundTruthData"]:
    """The (size x L1) grid on ground-truth toy data at this ``TUTORIAL_SCALE``, cached.

    Returns the grid and the data generator (whose ``features`` are the ground truth).
    ``correlated`` and ``decay`` switch the report's two data properties; any change is a
    new cache entry, so every variant is trained once per machine.
    """
    from helpers.data import GroundTruthConfig, GroundTruthData
    from helpers.course.sizes import sizes
    from helpers.diagnostics.grid import run_grid

    s = sizes(scale)
    cfg = GroundTruthConfig(n_features=s.sae.gt_features, d=s.sae.gt_dim, correlated=correlated, decay=decay, seed=0)
    data = GroundTruthData(cfg)
    base = toy_recipe(scale)
    grid = run_grid(
        data.sample, base, s.sae.dict_ratios if size_ratios is None else size_ratios,
        s.grid.l1_values if l1_values is None else l1_values, reference_size=s.sae.gt_features,
        ground_truth=data.features, cache_name=f"toy-{s.scale}", cache_description=cfg, progress=progress,
    )
    return grid, data
