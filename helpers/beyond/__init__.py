"""Beyond the interim report (notebooks 05 and 06): modern SAEs, metrics beyond MMCS, the report's
suspects for why language-model heatmaps differ from toy ones, feature absorption, and how to
choose L0 and width.

Modules, in reading order: ``scores`` (every recovery metric of a stack of SAEs, per instance),
``training`` (cached training of stacks, TopK with its own k per instance, the size x k grid),
``suspects`` (toy data with one suspect switched on, and the language-model signature),
``absorption`` (does a parent latent stop firing when its child fires), and for notebook 06
``matryoshka`` (BatchTopK with its own k per instance, and the Matryoshka loss), ``choosing``
(SAELens' synthetic-data measures and those the rules for L0 and width read) and ``choice_grid``
(the width x setting grid, and those rules graded on ground truth).
"""
from helpers.beyond.absorption import AbsorptionScores, absorption_scores
from helpers.beyond.scores import SCORE_NAMES, Scores, at_matched_l0, format_scores, score_sae
from helpers.beyond.suspects import (
    SIGNATURE, SUSPECTS, SuspectResult, lm_signature, signature_table, suspect_config, suspect_grid,
)
from helpers.beyond.training import PerInstanceTopK, Trained, k_grid, k_grid_config, train_cached

__all__ = [
    "AbsorptionScores", "PerInstanceTopK", "SCORE_NAMES", "SIGNATURE", "SUSPECTS", "Scores", "SuspectResult",
    "Trained", "absorption_scores", "at_matched_l0", "format_scores", "k_grid", "k_grid_config", "lm_signature", "score_sae",
    "signature_table", "suspect_config", "suspect_grid", "train_cached",
]
