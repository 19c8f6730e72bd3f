"""Toy models of superposition, many at once.

``config`` (``ToyConfig``), ``data`` (the sparse feature sampler), ``model`` (``ToyModel``:
``forward`` and the per-instance ``loss`` that trains), ``train`` (the loop and its log),
``geometry`` (reading W), ``experiments`` / ``pairs`` / ``computation`` (the sweeps notebook
01 draws, each from a base ``ToyConfig``), ``cache`` (the slow ones on disk). Everything a notebook needs is importable from here: ``from helpers import toy``.
"""
from helpers.toy.computation import AbsResult, NeuronResult, abs_sweep, neuron_sweep
from helpers.toy.config import READOUTS, ToyConfig
from helpers.toy.data import FeatureSampler
from helpers.toy.experiments import (BestOfSeeds, Dimensionality, PhaseDiagram, Sweep, best_of_seeds,
                                     decay_importance, dimensionality_sweep, phase_diagram, pick_best, stacked,
                                     sweep)
from helpers.toy.geometry import (PHASES, STICKY_FRACTIONS, LossSplit, Polygon, loss_split, classify_extra_feature, feature_dimensionality,
                                  feature_norms, interference, n_represented, partner_angles, polygon,
                                  polysemantic_neurons, superposition)
from helpers.toy.model import ToyModel, logits, readout_fn, toy_loss
from helpers.toy.pairs import PAIR_KINDS, PairResult, pair_experiment
from helpers.toy.train import TrainLog, cpu_threads, evaluate, train
from helpers.optim import LR_SCHEDULES, NonFiniteLossError

__all__ = [
    "AbsResult", "abs_sweep", "NeuronResult", "neuron_sweep", "READOUTS", "ToyConfig", "FeatureSampler", "BestOfSeeds", "Dimensionality",
    "PhaseDiagram", "Sweep", "best_of_seeds", "decay_importance", "dimensionality_sweep", "phase_diagram", "pick_best",
    "stacked", "sweep",
    "PHASES", "STICKY_FRACTIONS", "LossSplit", "loss_split", "Polygon", "classify_extra_feature", "feature_dimensionality",
    "feature_norms", "interference", "n_represented", "partner_angles", "polygon", "polysemantic_neurons",
    "superposition", "ToyModel", "logits", "readout_fn", "toy_loss", "PAIR_KINDS", "PairResult", "pair_experiment",
    "TrainLog", "cpu_threads", "evaluate", "train", "LR_SCHEDULES", "NonFiniteLossError",
]
