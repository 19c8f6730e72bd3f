"""Helpers for the superposition and sparse autoencoder course.

The ideas, one package each: ``toy`` (toy models of superposition), ``data`` (ground-truth
sparse features), ``sae`` (stacked sparse autoencoders and their variants), ``metrics``,
``diagnostics`` (choosing size and L1 without ground truth), ``lm`` (SAEs on a language
model's MLP), ``beyond`` (notebook 05: modern SAEs and why real data differs).
The course's plumbing: ``device`` (device, seed, sizes per ``TUTORIAL_SCALE``), ``recipes`` (the
toy data's SAE recipe and notebook 03's cached grid at each scale), ``paths``
(caches), ``claims``, ``exercises`` and ``checks`` (the exercises' checks), ``colab``;
figures in ``plotting_*``, ``plotly_figures`` and ``widgets*``.
Import the module you need: ``from helpers import sae``.
"""
from helpers.device import course_seed, current_scale, get_device, rng, seed_everything, sizes

__all__ = ["course_seed", "current_scale", "get_device", "rng", "seed_everything", "sizes"]
