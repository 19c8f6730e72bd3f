"""SAEs on a language model's MLP: loading, harvesting activations, evaluating, reading features.

Models load only through TransformerLens' ``TransformerBridge`` (3.9 and 4.x share it and its
hook names), so the course works beside SAELens, which pins TransformerLens 3.9.

* ``loading``: ``load_model("tiny-offline")`` (the one-layer GPT-2 that ``scripts/build_tiny_lm.py``
  built, no network) or a Hugging Face id, moved whole to the course's device; the corpus windows.
* ``harvest``: MLP activations for a token budget into a memory-mapped cache keyed by the
  model's weights, hooks, corpus and budget, checked against its metadata when reopened.
* ``evaluation``: L0, FVU, dead and dense latents, and CE loss recovered with the SAE spliced
  into the MLP, optionally on held-out windows the SAE never trained on; ``floors``: fairer
  references than the zeroed MLP (its mean, a lookup table of the current token).
* ``features`` / ``geometry``: densities, top contexts, the latents worth reading, logit effects,
  and the pair geometry of notebook 04's section 5, streamed over chunks of rows; ``dashboard``:
  one dashboard per latent or neuron. Figures and HTML views are in ``helpers.figures.lm``.
* ``intervene``: the latents firing on each token of a prompt; ablating and steering one.
* ``offline``: where the offline model and its corpus live; ``structure``: how much of the MLP
  is a lookup table of the current token.
* ``grid_cache``: the SAE grid trained once and reopened from disk; ``memory``: the sizes of that
  grid that fit a GPU; ``browser``: a line per latent.
"""
from helpers.lm.browser import LatentTable, latent_table
from helpers.lm.validate import KINDS
from helpers.lm.dashboard import Dashboard, Units, dashboards, latent_units, neuron_units
from helpers.lm.grid_cache import sae_grid
from helpers.lm.intervene import (ablate_hook, format_next_token, format_prompt_latents, next_token_change,
                                  prompt_latents, steer_hook)
from helpers.lm.evaluation import (Baselines, ReconstructionStats, SAEEval, SpliceResult, ce_baselines, ce_with_sae,
                                   evaluate_saes, hooked_loss, kl_to_clean, kl_with_sae, reconstruction_stats, splice_hook)
from helpers.lm.floors import ContextFreeBaselines, context_free_baselines, context_free_hooks
from helpers.lm.features import (CHUNK_ELEMENTS, LatentActs, LatentStats, LogitEffect, TokenLogit, chunk_rows_for,
                                 latent_activations, latent_stats, logit_effects, pick_latents, residual_effects,
                                 top_contexts, top_rows)
from helpers.lm.geometry import (PairGeometry, activation_row_geometry, activation_row_mmcs, co_occurrence_lift, geometry_table, pair_geometry, random_geometry,
                                 shuffled_geometry)
from helpers.lm.harvest import Activations, cache_folder, cache_problem, harvest
from helpers.lm.memory import T4_BYTES, GridMemory, fit_sizes, grid_memory, plan_grid
from helpers.lm.structure import MLPStructure, mlp_structure
from helpers.lm.loading import (CORPORA, CORPUS, OFFLINE_MODEL, ONLINE_MODEL, ONLINE_MULTILAYER_MODEL, corpus_name,
                                corpus_token_windows, dataset_documents, load_model, mlp_hooks, model_device,
                                move_model, offline_model_info, weights_fingerprint)

__all__ = [
    "KINDS", "Baselines", "ReconstructionStats", "SAEEval", "SpliceResult", "ce_baselines", "ce_with_sae",
    "evaluate_saes", "reconstruction_stats", "splice_hook", "hooked_loss", "ContextFreeBaselines", "context_free_baselines", "context_free_hooks", "kl_to_clean", "kl_with_sae", "CHUNK_ELEMENTS", "LatentActs", "LatentStats",
    "LogitEffect", "TokenLogit", "chunk_rows_for", "latent_activations", "latent_stats", "logit_effects",
    "pick_latents", "residual_effects", "top_contexts", "top_rows", "PairGeometry", "co_occurrence_lift",
    "geometry_table", "activation_row_geometry", "activation_row_mmcs", "pair_geometry", "random_geometry", "shuffled_geometry", "Activations", "cache_folder", "cache_problem", "harvest", "CORPUS",
    "CORPORA", "corpus_name", "dataset_documents", "OFFLINE_MODEL", "ONLINE_MODEL", "ONLINE_MULTILAYER_MODEL", "corpus_token_windows", "load_model", "mlp_hooks", "model_device",
    "move_model", "weights_fingerprint", "MLPStructure", "mlp_structure", "offline_model_info", "LatentTable", "latent_table", "Dashboard", "Units", "dashboards",
    "latent_units", "neuron_units", "sae_grid", "ablate_hook", "format_next_token",
    "format_prompt_latents", "next_token_change", "prompt_latents", "steer_hook",
    "T4_BYTES", "GridMemory", "fit_sizes", "grid_memory", "plan_grid",
]
