"""Checks for notebook 04's exercises: splicing an SAE into the model, the top activating
contexts of a latent, and a latent's logit effect.

Each check runs the reader's function on small cases whose answers are known (and, for the
splice, through the model itself against ``helpers.lm``'s reference) and returns the function
the notebook goes on with (see ``helpers.exercises.check``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from helpers.exercises import check, expect
from helpers.lm.evaluation import ce_with_sae, splice_hook, token_mean_table
from helpers.lm.features import top_contexts as top_contexts_reference
from helpers.lm.loading import mlp_hooks, model_device


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------
def make_splice_reference(sae) -> Callable:
    """A hook ``splice(acts, hook)`` that replaces every position but the first (BOS) of
    ``hook_post`` by the one-instance ``sae``'s reconstruction, in the activations' dtype and
    on their device."""
    return splice_hook(sae, 0)


def latent_logits_reference(sae, f: int, W_out: torch.Tensor, W_U: torch.Tensor) -> torch.Tensor:
    """(vocab,) what latent ``f`` of a one-instance ``sae`` does to the logits, per unit of
    activation: its unit decoder direction (d_mlp,) -> W_out (d_mlp, d_model) -> W_U (d_model, vocab)."""
    d = sae.decoder_directions()[0, f]                                    # (d_mlp,)
    return d.to(W_out.dtype) @ W_out @ W_U


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def _run_hook(hook_fn, x: torch.Tensor) -> torch.Tensor:
    """The reader's hook on a copy of ``x``; a device or dtype clash is the likely mistake."""
    try:
        with torch.no_grad():
            y = hook_fn(x.clone(), None)
    except NotImplementedError:
        raise
    except (RuntimeError, TypeError) as err:
        expect(False, f"the hook failed on {x.dtype} activations ({err}): move the activations to the "
                      "SAE's device and float32 before encoding, and the reconstruction back with "
                      ".to(acts.device, acts.dtype)")
    return y


def splice(make_splice: Callable, model, sae, tokens) -> Callable:
    """Check ``make_splice(sae)``: its hook returns the SAE's reconstruction at every position
    but the first, in the activations' dtype, and gives the model the same loss as the reference."""
    def test(fn):
        d = sae.cfg.d_in
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 5, d, generator=gen).abs()                          # (batch, seq, d_mlp)
        hook_fn = fn(sae)
        y = _run_hook(hook_fn, x)
        expect(isinstance(y, torch.Tensor) and y.shape == x.shape,
               f"return a tensor shaped like the activations {tuple(x.shape)}, got "
               f"{tuple(getattr(y, 'shape', ())) or type(y).__name__}")
        expect(torch.equal(y[:, 0], x[:, 0]),
               "position 0 changed: keep the BOS position as it is (the SAE never trained on it; "
               "replace only acts[:, 1:])")
        want = make_splice_reference(sae)(x.clone(), None)
        expect(torch.allclose(y[:, 1:], want[:, 1:], atol=1e-4),
               "positions 1: are not the SAE's reconstruction: flatten them to (batch * (seq - 1), d_mlp), "
               "take sae.decode(sae.encode(flat))[0] and reshape back")
        y64 = _run_hook(hook_fn, x.double())
        expect(y64.dtype == torch.float64 and y64.device == x.device,
               f"the hook returned {y64.dtype} on {y64.device} for float64 activations on {x.device}: return "
               "the reconstruction with .to(acts.device, acts.dtype)")
        toks = torch.as_tensor(np.asarray(tokens[:2]))
        hook_name = mlp_hooks(0)["post"]
        with torch.no_grad():
            got = float(model.run_with_hooks(toks.to(model_device(model)), return_type="loss",
                                             fwd_hooks=[(hook_name, fn(sae))]))
        ref = ce_with_sae(model, toks, sae).with_sae
        expect(abs(got - ref) < 1e-3, f"inside the model the loss is {got:.4f} nats/token, the reference gives "
                                      f"{ref:.4f}: the hook must return the modified activations")

    return check("splice an SAE into the MLP", make_splice, make_splice_reference, test,
                 "the splice replaces the MLP's activations by the SAE's reconstruction of them, leaving each window's "
                 "first (BOS) position alone, and returns a new tensor",
                 how="copy the activations; flatten every position but the first into rows; reconstruct them with the "
                     "SAE on its own device and dtype; move the result back to the activations' device and dtype and "
                     "write it into the copy")


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
    sae = SAE(SAEConfig(d_in=6, d_sae=5))
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


# --------------------------------------------------------------------------------------
# CE loss recovered against a baseline, and the per-token lookup baseline
# --------------------------------------------------------------------------------------
def ce_recovered_reference(clean: float, spliced: float, baseline: float) -> float:
    """Share of the loss gap between ``baseline`` and the clean model that the spliced SAE closes:
    (baseline - spliced) / (baseline - clean). 1: the SAE costs nothing; 0: no better than the
    baseline (zero-ablation, the mean, or the per-token lookup); negative: worse than it."""
    from helpers.metrics import ce_loss_recovered

    return float(ce_loss_recovered(float(clean), float(spliced), float(baseline)))


def token_lookup_baseline_reference(acts: torch.Tensor, tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """(vocab, d) the mean activation of each current token over the rows of ``acts`` (n, d) whose
    token id (``tokens``, (n,)) it is; a token never seen gets the overall mean of all n rows: the
    course's own table (``helpers.lm.evaluation.token_mean_table``), on one tensor."""
    return token_mean_table([(acts, tokens)], vocab)[0]


def ce_recovered(learner: Callable) -> Callable:
    """Check ``ce_recovered(clean, spliced, baseline) -> float`` on losses with known answers."""
    def test(fn):
        def run(clean, spliced, baseline):
            got = fn(clean, spliced, baseline)
            try:
                return float(got)
            except (TypeError, ValueError, RuntimeError):
                expect(False, f"return one number; got {type(got).__name__}")

        one, other = run(3.0, 3.5, 5.0), run(3.0, 3.5, 4.0)
        expect(abs(one - other) > 1e-6, "your answer does not change with the baseline: use the baseline you are "
                                        "given (zero-ablation is only one of them), not a fixed loss")
        cases = [(3.0, 3.5, 5.0), (3.0, 3.5, 4.0), (2.0, 2.2, 6.0)]
        for clean, spliced, baseline in cases:
            got, want = run(clean, spliced, baseline), ce_recovered_reference(clean, spliced, baseline)
            if abs(got - want) < 1e-6:
                continue
            expect(abs(got + want) > 1e-6,
                   "your answer has the wrong sign: divide by (baseline - clean), the gap the baseline opens "
                   "(positive), not by (clean - baseline)")
            expect(abs(got - (1 - want)) > 1e-6,
                   "that is the share of the gap the SAE leaves open, (spliced - clean) / (baseline - clean): "
                   "CE recovered is one minus that, (baseline - spliced) / (baseline - clean)")
            expect(abs(got - (spliced - clean) / (baseline - spliced)) > 1e-6
                   and abs(got - (baseline - spliced) / (spliced - clean)) > 1e-6,
                   "divide by the whole gap, baseline - clean, not by a part of it")
            expect(abs(got - want * 100) > 1e-4, "return a fraction (1 = all recovered), not a percentage")
            expect(False, f"with clean {clean}, spliced {spliced} and baseline {baseline} the answer is {want:.4f}, "
                          f"you got {got:.4f}: (baseline - spliced) / (baseline - clean)")
        worse = run(3.0, 6.0, 5.0)
        expect(abs(worse - ce_recovered_reference(3.0, 6.0, 5.0)) < 1e-6,
               f"a splice worse than the baseline recovers a negative share (-0.5 here), got {worse:g}: do not clip "
               "to [0, 1], a negative value is informative")

    return check("ce_recovered", learner, ce_recovered_reference, test,
                 hint="CE loss recovered says what share of the loss gap between a baseline (a crude replacement of "
                      "the layer) and the clean model the SAE's reconstruction closes: 1 costs nothing, 0 is no better "
                      "than the baseline, below 0 is worse",
                 how="take the gap between the baseline's loss and the clean loss; take how far the spliced loss sits "
                     "below the baseline's; divide the second by the first. Use the baseline you are given, and do "
                     "not clip the result")


def _lookup_case():
    """40 rows of 3-dimensional activations over tokens {0, 2, 3, 5, 7} of a vocabulary of 9,
    seen 1 to 20 times; 1, 4, 6 and 8 never seen."""
    g = torch.Generator().manual_seed(2)
    counts = {0: 20, 2: 9, 3: 1, 5: 6, 7: 4}
    tokens = torch.tensor([t for t, c in counts.items() for _ in range(c)])
    tokens = tokens[torch.randperm(len(tokens), generator=g)]
    acts = torch.randn(len(tokens), 3, generator=g) + tokens[:, None].float() * torch.tensor([0.5, -0.3, 0.1]) + 1.0
    return acts, tokens, 9


def token_lookup_baseline(learner: Callable) -> Callable:
    """Check ``token_lookup_baseline(acts, tokens, vocab) -> (vocab, d)`` against the reference."""
    def test(fn):
        acts, tokens, vocab = _lookup_case()
        got = fn(acts.clone(), tokens.clone(), vocab)
        want = token_lookup_baseline_reference(acts, tokens, vocab)
        expect(isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[1] == acts.shape[1],
               f"return a table with one row of {acts.shape[1]} activations per token id, shape ({vocab}, "
               f"{acts.shape[1]}); got {tuple(getattr(got, 'shape', ())) or type(got).__name__}")
        expect(got.shape[0] == vocab,
               f"the table has {got.shape[0]} rows: it needs one per vocabulary id, {vocab}, so that any token can "
               "be looked up by its id (only the ids seen in the data get their own mean)")
        got = got.detach().double()
        want = want.double()
        if torch.allclose(got, want, atol=1e-5):
            return
        seen = torch.zeros(vocab, dtype=torch.bool)
        seen[tokens] = True
        overall = acts.double().mean(0)
        expect(not torch.allclose(got, overall.expand(vocab, -1), atol=1e-5),
               "every row is the overall mean: that is the mean-ablation baseline; average each token's own rows")
        expect(torch.allclose(got[seen], want[seen], atol=1e-5) or not torch.allclose(
                   got[seen], torch.zeros(vocab, acts.shape[1], dtype=torch.float64)
                   .index_add_(0, tokens, acts.double())[seen], atol=1e-5),
               "you summed each token's activations: divide by how many times the token occurs")
        expect(torch.allclose(got[seen], want[seen], atol=1e-5) or not torch.allclose(
                   got[seen], torch.zeros(vocab, acts.shape[1], dtype=torch.float64)
                   .index_add_(0, tokens, acts.double())[seen] / len(tokens), atol=1e-5),
               "you divided each token's sum by the number of all rows: divide by that token's own count")
        expect(torch.allclose(got[seen], want[seen], atol=1e-5),
               "the rows of the tokens that occur are not their mean activation: for each token id, average the "
               "activations of the rows where it is the current token")
        expect(not torch.allclose(got[~seen], torch.zeros_like(got[~seen])),
               "tokens never seen are left at zero (a zero-ablation for them): give them the overall mean of all rows")
        expect(not bool(got[~seen].isnan().any()),
               "tokens never seen came out as NaN (0 / 0): give them the overall mean of all rows")
        expect(not torch.allclose(got[~seen], want[seen].mean(0).expand(int((~seen).sum()), -1), atol=1e-5),
               "unseen tokens got the mean of the token means: give them the mean over all rows (a common token "
               "weighs as often as it occurs)")
        expect(False, "the rows of tokens never seen must be the overall mean activation of all rows")

    return check("token_lookup_baseline", learner, token_lookup_baseline_reference, test,
                 hint="the per-token lookup replaces the layer's output by a table indexed by the current token: each "
                      "token's mean activation over the rows where it occurs, and the overall mean for a token never "
                      "seen; an SAE that does not beat it adds nothing a table of the current token could not",
                 how="add up the activations per token id and count how often each id occurs (an index-add on a "
                     "table of zeros with one row per vocabulary id does both); divide sums by counts where the count "
                     "is positive, and fill the other rows with the mean of all rows")
