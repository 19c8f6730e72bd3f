"""Helpers for the superposition and sparse autoencoder course.

One concept per module: ``device`` (where and how big), ``toy`` (toy models of
superposition), ``data`` (ground-truth sparse features), ``sae`` (stacked sparse
autoencoders), ``metrics``, ``diagnostics``, ``lm`` (language-model activations),
``plotting`` and ``widgets``. Import the module you need: ``from helpers import sae``.
"""
from helpers.device import course_seed, current_scale, get_device, rng, seed_everything, sizes

__all__ = ["course_seed", "current_scale", "get_device", "rng", "seed_everything", "sizes"]
