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
(``save_grid``/``load_grid``) and ``suggest``
(``suggest_hyperparameters``: each diagnostic as a choice); its figures and the slider
explorer of its cells are in ``helpers.figures.diagnostics``. Nothing here
reads the ground truth except the column that says how well each cell recovered it
(``mmcs_ground_truth``), which exists only for toy data. Notebook 03's recipe and its cached grid
(``toy_recipe``, ``toy_grid``) live in ``helpers.course.recipes`` and are re-exported here.
"""
from helpers.diagnostics.cache import load_grid, save_grid
from helpers.diagnostics.grid import GridDivergedWarning, column_config, run_grid, training_code
from helpers.diagnostics.result import DEAD_CAP, DERIVED, METRICS, GridResult
from helpers.diagnostics.rules import (
    dead_free_run, loss_steepness, mmcs_with_larger, random_baseline_with_larger, ssll, standardized_log,
)
from helpers.diagnostics.suggest import Suggestion, Suggestions, suggest_hyperparameters
from helpers.store import CacheCorruptError, CacheWarning
from helpers.course.recipes import toy_grid, toy_recipe

__all__ = [
    "CacheCorruptError", "CacheWarning", "DEAD_CAP", "DERIVED", "GridDivergedWarning", "GridResult",
    "METRICS", "Suggestion", "Suggestions", "column_config", "dead_free_run",
    "load_grid", "loss_steepness", "mmcs_with_larger", "random_baseline_with_larger", "run_grid", "save_grid", "ssll",
    "standardized_log", "suggest_hyperparameters", "toy_grid", "toy_recipe", "training_code",
]

