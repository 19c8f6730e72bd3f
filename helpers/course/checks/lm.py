"""Checks for notebook 04's exercises: the top activating contexts of a latent and a latent's logit
effect. The checks of the per-token lookup and of CE loss recovered with its floors live in
``helpers.course.checks.lm_floors`` and are re-exported here, so ``checks.lm.<name>`` finds them all.

Each check runs the reader's function on small cases whose answers are known and returns the
function the notebook goes on with (see ``helpers.course.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from helpers.course.checks.lm_floors import (ce_with_floors, ce_with_floors_reference,  # noqa: F401 (notebook 04 reads them here)
                                      token_lookup_baseline, token_lookup_baseline_reference)
from helpers.course.exercises import check, expect
from helpers.lm.features import top_contexts as top_contexts_reference


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def latent_logits_reference(sae, f: int, W_out: torch.Tensor, W_U: torch.Tensor) -> torch.Tensor:
    """(vocab,) what latent ``f`` of a one-instance ``sae`` does to the logits, per unit of
    activation: its unit decoder direction (d_mlp,) -> W_out (d_mlp, d_model) -> W_U (d_model, vocab)."""
    d = sae.decoder_directions()[0, f]                                    # (d_mlp,)
    return d.to(W_out.dtype) @ W_out @ W_U


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def _context_case() -> tuple[np.ndarray, np.ndarray]:
    """Three windows of 8 distinct tokens; peaks near a window's start, end and middle."""
    tokens = np.arange(24, dtype=np.int64).reshape(3, 8) + 100
    acts = np.zeros(24, dtype=np.float32)
    acts[[8 + 1, 7, 16 + 4, 3]] = [5.0, 4.0, 3.0, 1.0]   # window 1 pos 1, window 0 pos 7, window 2 pos 4, window 0 pos 3
    acts[[2, 10, 18]] = [0.5, 0.2, 0.1]                   # weaker context
    return tokens, acts


def top_contexts(fn: Callable) -> Callable:
    """Check ``top_contexts(latent_acts, tokens, k, before, after)`` against the reference."""
    def test(f):
        tokens, acts = _context_case()
        got = list(f(acts, tokens, k=3, before=2, after=1))
        want = top_contexts_reference(acts, tokens, k=3, before=2, after=1)
        expect(len(got) == len(want), f"k=3 asks for 3 contexts, got {len(got)}")
        values = [float(g[2]) for g in got]
        expect(values == sorted(values, reverse=True) and np.allclose(values, [w[2] for w in want]),
               f"the contexts should be the k largest activations, largest first ({[w[2] for w in want]}), "
               f"got values {values}")
        for g, w in zip(got, want):
            ids, at = np.asarray(g[0]), int(g[1])
            expect(len(ids) <= len(w[0]),
                   "a window reaches into the neighbouring window: clip it to the peak's own window "
                   "(row // seq_len picks the window, row % seq_len the position in it)")
            expect(np.array_equal(ids, w[0]),
                   f"window of the activation {w[2]:g}: expected tokens {w[0].tolist()}, got {ids.tolist()}: "
                   "take `before` tokens before the peak and `after` after it, within the peak's own window")
            expect(at == w[1], f"the peak's index within its window should be {w[1]}, got {at}")
            expect(np.allclose(np.asarray(g[3]), w[3]),
                   "the last item should be the latent's activations over the same window")
        few = list(f(acts, tokens, k=10, before=2, after=1))
        expect(len(few) == int((acts > 0).sum()),
               f"only {(acts > 0).sum()} tokens have a positive activation, got {len(few)} contexts for k=10: "
               "stop at activations <= 0")

    return check("top activating contexts", fn, top_contexts_reference, test,
                 "find the k rows where the latent is largest and show the tokens around each, inside its own window",
                 how="order the rows by activation, largest first, and keep k; turn each flat row into a window and a "
                     "position in it; cut the window from 'before' tokens earlier to 'after' tokens later, clipped at "
                     "the window's start")


def _logit_case():
    """A 6-neuron SAE of 5 latents whose encoder is not its decoder's transpose, and whose
    decoder rows are not unit norm; W_out (6, 4), W_U (4, 9)."""
    from helpers.sae import SAE, SAEConfig

    gen = torch.Generator().manual_seed(1)
    sae = SAE(SAEConfig(d_in=6, d_sae=5), device="cpu")  # the check runs on the CPU, whatever the course uses
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=gen))
        sae.W_dec.mul_(torch.linspace(0.5, 3.0, 5)[None, :, None])
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=gen))   # a decoder bias, as trained SAEs have
    return sae, torch.randn(6, 4, generator=gen), torch.randn(4, 9, generator=gen)


def latent_logits(fn: Callable) -> Callable:
    """Check ``latent_logits(sae, f, W_out, W_U)``: decoder direction -> W_out -> unembedding."""
    def test(f):
        sae, W_out, W_U = _logit_case()
        try:
            got = torch.as_tensor(f(sae, 2, W_out, W_U)).detach()
        except RuntimeError as err:
            expect("shape" not in str(err) and "size" not in str(err),
                   "shapes do not match: the decoder direction lives in the MLP's neuron space (d_mlp), "
                   "the unembedding reads the residual stream (d_model): go through W_out first")
            raise
        want = latent_logits_reference(sae, 2, W_out, W_U)
        expect(got.shape == want.shape, f"return one logit per vocabulary token, shape {tuple(want.shape)}, "
                                        f"got {tuple(got.shape)}")
        enc = sae.W_enc[0, :, 2].detach()
        expect(not torch.allclose(got, enc @ W_out @ W_U, atol=1e-4) and
               not torch.allclose(got, enc / enc.norm() @ W_out @ W_U, atol=1e-4),
               "that is the encoder's direction (what the latent reads): use the decoder's (what it writes)")
        expect(not torch.allclose(got, sae.W_dec[0, 2].detach() @ W_out @ W_U, atol=1e-4),
               "W_dec's row is not unit norm: use sae.decoder_directions(), the direction the forward pass uses")
        d, b = sae.decoder_directions()[0, 2].detach(), sae.b_dec[0].detach()
        one_hot = torch.nn.functional.one_hot(torch.tensor([2]), 5).float()[None]      # (instance, row, latent)
        decoded = sae.decode(one_hot)[0, 0].detach()                                     # direction + b_dec
        expect(not torch.allclose(got, (d + b) @ W_out @ W_U, atol=1e-4) and
               not torch.allclose(got, decoded @ W_out @ W_U, atol=1e-4),
               "leave the decoder bias out: it is added whatever the latent does, so it is not the latent's effect "
               "(decoding a one-hot code includes it)")
        expect(torch.allclose(got, want, atol=1e-4), "not decoder direction @ W_out @ W_U")

    return check("logit effect of a latent", fn, latent_logits_reference, test,
                 "a latent's direct effect on the logits is its decoder direction carried through the MLP's output "
                 "matrix and the unembedding",
                 how="take the latent's unit decoder direction (one number per MLP neuron), map it to the residual stream "
                     "with the MLP's output matrix, then to one number per vocabulary token with the unembedding. "
                     "Leave the decoder bias out: it is the same for every latent")
