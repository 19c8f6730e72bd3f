"""Helpers for the superposition and sparse autoencoder course.

The ideas: ``toy`` (toy models of superposition, notebook 01), ``data`` (toy activations with
ground-truth features), ``sae`` (stacked sparse autoencoders and their variants), ``metrics``
(MMCS, L0, FVU, CE recovered) and ``recovery`` (one-to-one matching, duplicates, firing:
recovery beyond MMCS), ``diagnostics`` (choosing size and L1 without ground truth, notebook 03),
``lm`` (SAEs on a language model's MLP, notebook 04; ``lm.offline``: where its offline model lives
and the corpus it was trained on; ``scripts/build_tiny_lm.py`` builds that model), ``beyond``
(notebooks 05 and 06: modern SAEs, the report's suspects, absorption, choosing L0 and width).
The course's plumbing lives in ``course`` (``course.sizes``: how big every run is per
``TUTORIAL_SCALE``, one frozen block per notebook: ``sizes().toy.steps``; ``course.recipes``,
``course.claims``, ``course.exercises``, ``course.checks``, ``course.colab``), beside ``device``
(device, seeds), ``optim`` (the optimizer, learning-rate schedule and finite-loss check every
trainer shares), ``paths`` and ``store`` (shipped data, caches); figures (static, interactive,
sliders) in ``figures``, one module per notebook.
Import the module you need: ``from helpers import sae``. The everyday functions of ``device`` and
``course.sizes`` are importable from the package itself: ``from helpers import get_device, sizes``.
"""
from helpers.course.sizes import current_scale, sizes
from helpers.device import course_seed, get_device, rng, seed_everything

__all__ = ["course_seed", "current_scale", "get_device", "rng", "seed_everything", "sizes"]
