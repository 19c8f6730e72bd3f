"""Checks for notebook 04's exercises on CE loss recovered: the per-token lookup baseline, and CE
loss recovered with its floors (the SAE and three floors spliced into the model, checked through
the model itself against ``helpers.lm``'s machinery). ``helpers.course.checks.lm`` re-exports them, so
``checks.lm.<name>`` finds every check of the notebook.

Each check returns the function the notebook goes on with (see ``helpers.course.exercises.check``).
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from helpers.course.exercises import check, expect
from helpers.lm.evaluation import hooked_loss
from helpers.lm.floors import token_mean_table


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
    course's own table (``helpers.lm.floors.token_mean_table``), on one tensor."""
    return token_mean_table([(acts, tokens)], vocab)[0]


def _expect_recovered(got: float, clean: float, spliced: float, baseline: float, floor: str = "") -> None:
    """Fail with the likely mistake unless ``got`` is the CE loss recovered of these three losses."""
    want = ce_recovered_reference(clean, spliced, baseline)
    if abs(got - want) < 1e-6:
        return
    where = f" (against the {floor} floor)" if floor else ""
    expect(abs(got + want) > 1e-6,
           f"your CE loss recovered{where} has the wrong sign: divide by (baseline - clean), the gap the baseline "
           "opens (positive), not by (clean - baseline)")
    expect(abs(got - (1 - want)) > 1e-6,
           f"that is the share of the gap the SAE leaves open{where}, (spliced - clean) / (baseline - clean): "
           "CE recovered is one minus that, (baseline - spliced) / (baseline - clean)")
    expect(abs(got - (spliced - clean) / (baseline - spliced)) > 1e-6
           and abs(got - (baseline - spliced) / (spliced - clean)) > 1e-6,
           f"divide by the whole gap{where}, baseline - clean, not by a part of it")
    expect(abs(got - want * 100) > 1e-4, "return a fraction (1 = all recovered), not a percentage")
    expect(not (want < 0 and abs(got) < 1e-6), f"the SAE does worse than this floor{where}, so its CE loss recovered "
           f"is negative ({want:.4f}); you returned 0: do not clip to [0, 1], a negative value is informative")
    expect(False, f"with clean {clean:.4f}, spliced {spliced:.4f} and baseline {baseline:.4f} the CE loss "
                  f"recovered{where} is {want:.4f}, you got {got:.4f}: (baseline - spliced) / (baseline - clean)")


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


# --------------------------------------------------------------------------------------
# CE loss recovered with its floors: the SAE and three floors spliced into the model
# --------------------------------------------------------------------------------------
FLOORS = ("zero", "mean", "token lookup")
"""The floors CE loss recovered is measured against, each replacing the MLP's activations."""


@torch.no_grad()
def _floor_losses(model, tokens, sae, mean: torch.Tensor, table: torch.Tensor, layer: int = 0, *, point: str = "post",
                  bos: bool = False, bias: bool = True, previous: bool = False,
                  kinds: tuple[str, ...] = ("clean", "sae", *FLOORS)) -> dict[str, float]:
    """Next-token loss (nats/token) on ``tokens`` with ``blocks.{layer}.mlp.hook_{point}`` replaced at
    every position but BOS by the SAE's reconstruction or a floor: zeros, ``mean`` (d,), or
    ``table`` (vocab, d) read at the current token. The keywords make the plausible mistakes:
    ``bos`` replaces BOS too, ``bias=False`` drops the decoder bias, ``previous`` reads the
    lookup at the previous token."""
    tokens = torch.as_tensor(np.asarray(tokens)).long()
    name, start = f"blocks.{layer}.mlp.hook_{point}", 0 if bos else 1

    def replaced(new):                   # new(x, toks) -> the values of positions start:
        def hooks(toks):
            def hook(x, hook):
                y = x.clone()
                y[:, start:] = new(x[:, start:], toks).to(x.device, x.dtype)
                return y
            return [(name, hook)]
        return hooks

    def reconstruction(x, toks):
        rows = x.reshape(-1, x.shape[-1]).to(sae.device, torch.float32)
        x_hat = sae.decode(sae.encode(rows))[0]
        return (x_hat if bias else x_hat - sae.b_dec[0]).reshape(x.shape)

    def lookup(x, toks):
        ids = torch.cat([toks[:, :1], toks[:, :-1]], 1) if previous else toks
        return table[ids[:, start:].cpu()]

    new = {"sae": reconstruction, "zero": lambda x, toks: torch.zeros_like(x),
           "mean": lambda x, toks: mean.expand(x.shape), "token lookup": lookup}
    return {k: hooked_loss(model, tokens, [] if k == "clean" else replaced(new[k]), 16) for k in kinds}


def ce_with_floors_reference(model, tokens, sae, train_acts: torch.Tensor, train_tokens: torch.Tensor,
                             layer: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """(losses, recovered): the next-token loss on ``tokens`` (n_seq, seq_len) of the clean model
    and with ``hook_post`` replaced at every position but BOS by the one-instance ``sae``'s
    reconstruction ("sae") and by each floor fitted on ``train_acts`` (n, d_mlp) with their
    current tokens ``train_tokens`` (n,): zeros, their mean, the per-token lookup; and the SAE's
    CE loss recovered against each floor."""
    table, mean = token_mean_table([(train_acts, train_tokens)], model.cfg.d_vocab)
    losses = _floor_losses(model, tokens, sae, mean, table, layer)
    return losses, {f: ce_recovered_reference(losses["clean"], losses["sae"], losses[f]) for f in FLOORS}


def _probe_sae(sae):
    """``sae`` itself, or a copy with a decoder bias where it has none (forgetting it must show)."""
    if float(sae.b_dec.detach().abs().max()) > 1e-3:
        return sae
    probe = copy.deepcopy(sae)
    with torch.no_grad():
        probe.b_dec.copy_(0.2 * torch.randn(probe.b_dec.shape, generator=torch.Generator().manual_seed(4)))
    return probe


def ce_with_floors(learner: Callable, model, sae, tokens, train_acts, train_tokens, layer: int = 0) -> Callable:
    """Check ``ce_with_floors(model, tokens, sae, train_acts, train_tokens, layer)`` through the model:
    four held-out windows, floors fitted on 2,000 training rows (so that some tokens are unseen)."""
    tokens = np.asarray(tokens)[:4]
    train_acts = torch.as_tensor(np.asarray(train_acts[:2000]), dtype=torch.float32)
    train_tokens = torch.as_tensor(np.asarray(train_tokens[:2000])).long()
    probe = _probe_sae(sae)
    table, mean = token_mean_table([(train_acts, train_tokens)], model.cfg.d_vocab)
    want = _floor_losses(model, tokens, probe, mean, table, layer)
    close = lambda a, b: abs(a - b) < 1e-3  # noqa: E731  (nats/token)
    seen = torch.zeros(model.cfg.d_vocab, dtype=torch.bool)      # tokens with training rows
    seen[train_tokens] = True

    def variant(kind, **kw):
        return _floor_losses(model, tokens, probe, kw.pop("mean", mean), kw.pop("table", table), layer, kinds=(kind,),
                             **kw)[kind]

    def diagnose(kind, got):
        """The likely mistake behind a wrong loss for ``kind``."""
        expect(not close(got, want["clean"]) or close(want[kind], want["clean"]),
               f"your '{kind}' loss is the clean model's: the hook must return the new activations (a hook that "
               "returns nothing, or changes a copy it does not return, changes nothing)")
        expect(not close(got, variant(kind, bos=True)),
               f"your '{kind}' run replaced position 0 too: keep the BOS position as it is (the SAE never trained "
               "on it, and the floors are fitted without it); replace only acts[:, 1:]")
        if kind != "zero":   # GELU(0) = 0: zeros look the same before the GELU
            expect(not close(got, variant(kind, point="pre")),
                   f"your '{kind}' run replaced blocks.{layer}.mlp.hook_pre, before the GELU: the SAE reads and "
                   f"writes blocks.{layer}.mlp.hook_post, the MLP's hidden activations after it")
        if kind == "sae":
            expect(not close(got, variant("sae", bias=False)),
                   "your reconstruction leaves out the decoder bias: x_hat = f D + b_dec, which "
                   "sae.decode(sae.encode(rows)) gives you whole")
        if kind == "token lookup":
            expect(not close(got, variant(kind, previous=True)),
                   "the lookup read the previous token: the activation at position p belongs to the token at p, "
                   "so positions 1: take the rows of tokens[:, 1:]")
            expect(not close(got, variant(kind, table=torch.where(seen[:, None], table, 0.0))),
                   "tokens never seen in training got zeros: a token with no rows gets the overall mean (your "
                   "token_lookup_baseline of exercise 1 does this)")
        if kind == "mean":
            expect(not close(got, variant(kind, mean=train_acts.mean().expand(mean.shape))),
                   "your mean is one number, the mean of every entry: the floor is the mean activation vector, one "
                   "value per neuron (the mean over the rows, axis 0)")
            expect(not close(got, variant(kind, mean=table[seen].mean(0))),
                   "your mean is the mean of the per-token means, which weighs a rare token like a common one: take "
                   "the mean over all training rows")
        expect(False, f"your '{kind}' loss is {got:.4f} nats/token, expected {want[kind]:.4f}: replace "
                      f"blocks.{layer}.mlp.hook_post at positions 1: and run the model with return_type='loss'")

    def test(fn):
        try:
            got = fn(model, tokens.copy(), probe, train_acts.clone(), train_tokens.clone(), layer=layer)
        except NotImplementedError:
            raise
        except (RuntimeError, TypeError, IndexError, ValueError) as err:
            expect(False, f"your function failed ({type(err).__name__}: {err}). blocks.{layer}.mlp.hook_post holds "
                          "(batch, seq, d_mlp) activations (hook_mlp_out holds d_model); move the rows to the SAE's "
                          "device as float32, and what you write back to the activations' device and dtype")
        expect(isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(d, dict) for d in got),
               f"return two dicts, (losses, recovered); got {type(got).__name__}")
        losses, recovered = got
        expect(set(losses) >= {"clean", "sae", *FLOORS} and set(recovered) >= set(FLOORS),
               f"losses needs the keys 'clean', 'sae', {', '.join(repr(f) for f in FLOORS)}; recovered the three "
               f"floors; got {sorted(losses)} and {sorted(recovered)}")
        losses = {k: float(v) for k, v in losses.items()}
        expect(close(losses["clean"], want["clean"]),
               f"the clean loss is {losses['clean']:.4f} nats/token, the model without hooks gives "
               f"{want['clean']:.4f}: run it on the tokens with return_type='loss' and no hook")
        for kind in ("sae", *FLOORS):
            if not close(losses[kind], want[kind]):
                diagnose(kind, losses[kind])
        got_rec = {f: float(recovered[f]) for f in FLOORS}
        zero_rec = ce_recovered_reference(losses["clean"], losses["sae"], losses["zero"])
        same = all(abs(got_rec[f] - zero_rec) < 1e-6 for f in FLOORS)
        expect(not same or all(abs(losses[f] - losses["zero"]) < 1e-6 for f in FLOORS),
               "every floor recovers the same share: you measured each against the zero floor; use each floor's "
               "own loss")
        for f in FLOORS:
            _expect_recovered(got_rec[f], losses["clean"], losses["sae"], losses[f], floor=f)

    return check("ce_with_floors", learner, ce_with_floors_reference, test,
                 "CE loss recovered says how much of the loss a crude replacement of the MLP (a floor) costs the "
                 "model the SAE's reconstruction wins back; it is only as meaningful as its floor, so measure it "
                 "against zeros, the mean and the per-token lookup",
                 how="fit the mean vector and the lookup table on the training rows; for the SAE and each floor, run "
                     "the model with a hook on the MLP's hidden activations that returns a copy whose positions "
                     "after the first hold the replacement (the SAE's reconstruction of those positions, zeros, the "
                     "mean, or each token's row of the table); keep the clean loss too; then, per floor, the share "
                     "of the floor's extra loss that the SAE avoids")
