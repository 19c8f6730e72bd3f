"""What every exercise check must do: the reference solution passes, and an unfinished
exercise (a stub) hands back the reference with its hint. Notebook 04's CE-with-floors check takes
a model, an SAE, tokens and training rows as well, so tests/test_checks_lm.py tests it the same way."""
from __future__ import annotations

import pytest

from helpers.course.checks import beyond, choosing, diagnostics, lm, sae, toy, training

EXERCISES = {
    toy: ("toy_loss", "neuron_loss", "sample_features", "feature_dimensionality", "classify_phase", "sample_anticorrelated_pairs",
          "tegum_factors"),
    sae: ("active_features", "sae_forward", "mmcs"),
    diagnostics: ("dead_latents", "ssll", "mmcs_with_larger", "dead_latent_pick"),
    lm: ("top_contexts", "latent_logits", "token_lookup_baseline"),
    beyond: ("topk_activation", "batchtopk_activation", "jumprelu_threshold_grad", "mcc"),
    choosing: ("matryoshka_loss", "nth_decoder_projection", "seed_consistency", "elbow"),
    training: ("toy_train_step", "resample_dead"),
}
CASES = [pytest.param(mod, name, id=f"{mod.__name__.rsplit('.', 1)[1]}.{name}")
         for mod, names in EXERCISES.items() for name in names]


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("module, name", CASES)
def test_reference_passes_its_check(module, name, capsys):
    reference = getattr(module, f"{name}_reference")
    assert getattr(module, name)(reference) is reference, f"the check of {name} rejects its own reference"
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("module, name", CASES)
def test_stub_falls_back_to_reference_with_hint(module, name, capsys):
    assert getattr(module, name)(stub) is getattr(module, f"{name}_reference"), (
        f"a stub of {name} must hand back the reference solution")
    out = capsys.readouterr().out
    assert "The idea:" in out and "A second hint" in out, f"the check of {name} must print its two hints for a stub"
