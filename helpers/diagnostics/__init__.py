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

Modules, in reading order: ``result`` (``GridResult``, the tidy table), ``rules`` (the
diagnostics as functions of its numbers), ``grid`` (``run_grid`` trains it), ``cache``
(``save_grid``/``load_grid``), ``suggest``
(``suggest_hyperparameters``: each diagnostic as a choice) and ``plots``. Nothing here
reads the ground truth except the column that says how well each cell recovered it
(``mmcs_ground_truth``), which exists only for toy data. The slider explorer of a grid's
cells is ``helpers.widgets.cell_explorer``; notebook 03's recipe and its cached grid
(``toy_recipe``, ``toy_grid``) live in ``helpers.recipes`` and are re-exported here.
"""
from helpers.diagnostics.cache import load_grid, save_grid
from helpers.diagnostics.grid import GridDivergedWarning, column_config, run_grid, training_code
from helpers.diagnostics.plots import PANELS, plot_diagnostics, plot_loss_basins, plot_mmcs_larger_by_size
from helpers.diagnostics.result import DEAD_CAP, DERIVED, METRICS, GridLog, GridResult
from helpers.diagnostics.rules import (
    dead_free_run, loss_steepness, mmcs_with_larger, random_baseline_with_larger, ssll, standardized_log,
)
from helpers.diagnostics.suggest import Suggestion, Suggestions, suggest_hyperparameters
from helpers.store import CacheCorruptError, CacheWarning
from helpers.recipes import toy_grid, toy_recipe

__all__ = [
    "CacheCorruptError", "CacheWarning", "DEAD_CAP", "DERIVED", "GridDivergedWarning", "GridLog", "GridResult",
    "METRICS", "PANELS", "Suggestion", "Suggestions", "cell_explorer", "column_config", "dead_free_run",
    "load_grid", "loss_steepness", "mmcs_with_larger", "plot_diagnostics", "plot_loss_basins",
    "plot_mmcs_larger_by_size", "random_baseline_with_larger", "run_grid", "save_grid", "ssll",
    "standardized_log", "suggest_hyperparameters", "toy_grid", "toy_recipe", "training_code",
]


def __getattr__(name: str):
    # The explorer moved beside the other sliders; imported on first use, so that reading
    # a grid never needs ipywidgets.
    if name == "cell_explorer":
        from helpers.widgets import cell_explorer

        return cell_explorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
