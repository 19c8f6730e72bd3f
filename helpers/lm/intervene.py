"""Reading a prompt token by token, and changing one feature to see what the model does.

* ``prompt_latents``: which units (SAE latents or neurons, a ``Units``) fire on each token of a
  text, strongest first: the pure function behind the prompt box of ``helpers.figures.lm``.
* ``ablate_hook`` / ``steer_hook``: hooks on the MLP's hidden layer. Ablating removes a unit's
  own contribution, ``x - a(x) w``, which equals splicing in the SAE (as
  ``lm.splice_hook`` does) with that latent zeroed *and* adding back the SAE's error, so
  nothing but that latent changes and a latent that does not fire changes nothing. Steering
  adds ``s w`` at every position but BOS.
* ``next_token_change``: the next-token distribution of a few prompts before and after a hook,
  with the change in the prompts' loss.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from helpers.lm.validate import check_int, check_layer, check_model
from helpers.lm.dashboard import Units
from helpers.lm.loading import mlp_hooks, model_device


class TokenUnits(NamedTuple):
    """The units that fire on one token of a prompt."""

    token: str
    """The token as text."""
    units: list[int]
    """Indices of the strongest units on it, strongest first (only those above zero)."""
    values: list[float]
    """Their activations."""


def prompt_tokens(model, text: str) -> torch.Tensor:
    """(1, n) token ids of ``text`` with the BOS token in front (as the harvest's windows start)."""
    check_model(model)
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [bos] + tok(text, add_special_tokens=False)["input_ids"][: model.cfg.n_ctx - 1]
    return torch.tensor([ids], dtype=torch.long)


@torch.no_grad()
def hidden_activations(model, tokens: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """(n, d_mlp) the MLP's hidden activations (``hook_post``) at every position of one sequence."""
    got = {}

    def grab(x, hook):
        got["x"] = x.detach()
        return x

    model.run_with_hooks(tokens.to(model_device(model)), return_type=None,
                         fwd_hooks=[(mlp_hooks(check_layer(layer, model))["post"], grab)])
    return got["x"][0].float().cpu()


@torch.no_grad()
def prompt_latents(model, units: Units, text: str, k: int = 5, layer: int = 0) -> list[TokenUnits]:
    """For each token of ``text`` (BOS left out): the ``k`` strongest units of ``units`` that fire on it.

    ``units``: ``lm.latent_units(sae, range(sae.cfg.d_sae))`` for every latent of an SAE.
    """
    k = check_int("k", k, 1)
    tokens = prompt_tokens(model, text)
    a = units.encode(hidden_activations(model, tokens, layer))[1:]                  # (n - 1, m)
    vals, idx = a.topk(min(k, a.shape[1]), dim=1)
    out = []
    for t, v, i in zip(tokens[0, 1:].tolist(), vals.tolist(), idx.tolist()):
        fire = [(int(units.ids[j]), x) for j, x in zip(i, v) if x > 0]
        out.append(TokenUnits(model.tokenizer.decode([t]), [u for u, _ in fire], [x for _, x in fire]))
    return out


def format_prompt_latents(rows: Sequence[TokenUnits], kind: str = "latent") -> str:
    """A plain-text table: one line per token, its strongest units as ``id (activation)``."""
    lines = [f"{'token':>14}  strongest {kind}s (activation)"]
    for r in rows:
        fired = "  ".join(f"{u} ({v:.2f})" for u, v in zip(r.units, r.values)) or "-"
        lines.append(f"{r.token.replace(chr(10), '⏎')!r:>14}  {fired}")
    return "\n".join(lines)


def _one(units: Units, unit: int) -> int:
    hits = np.flatnonzero(units.ids == unit)
    if hits.size == 0:
        raise ValueError(f"unit {unit} is not among units.ids ({units.ids[:10].tolist()}...): "
                         "build units with lm.latent_units(sae, [unit])")
    return int(hits[0])


def ablate_hook(units: Units, unit: int):
    """A ``hook_post`` hook that removes ``unit``'s contribution a(x) w at every position but BOS."""
    j = _one(units, unit)
    w = units.write[j]                                                              # (d_mlp,)

    def ablate(x, hook):                                                            # x: (batch, seq, d_mlp)
        y = x.clone()
        rows = x[:, 1:].reshape(-1, x.shape[-1])
        a = units.encode(rows)[:, j].to(x.device, x.dtype)                          # (rows,)
        y[:, 1:] = (rows - a[:, None] * w.to(x.device, x.dtype)).reshape(x[:, 1:].shape)
        return y
    return ablate


def steer_hook(units: Units, unit: int, scale: float):
    """A ``hook_post`` hook that adds ``scale`` times ``unit``'s direction w at every position but BOS."""
    w = units.write[_one(units, unit)]
    scale = float(scale)

    def steer(x, hook):
        y = x.clone()
        y[:, 1:] += scale * w.to(x.device, x.dtype)
        return y
    return steer


class NextToken(NamedTuple):
    """One prompt's next-token distribution before and after an intervention."""

    prompt: str
    """The text."""
    before: list[tuple[str, float]]
    """(token, probability) of the clean model's top tokens after the last one."""
    after: list[tuple[str, float]]
    """... with the intervention."""
    loss_before: float
    """Mean next-token loss over the prompt (nats/token), clean."""
    loss_after: float
    """... with the intervention."""
    logits_before: torch.Tensor
    """(vocab,) the last position's logits, clean."""
    logits_after: torch.Tensor
    """(vocab,) ... with the intervention."""


@torch.no_grad()
def next_token_change(model, prompts: Sequence[str], hook, k: int = 5, layer: int = 0) -> list[NextToken]:
    """Top ``k`` next tokens (with probabilities) of each prompt, clean and with ``hook`` on ``hook_post``."""
    k = check_int("k", k, 1)
    name = mlp_hooks(check_layer(layer, model))["post"]
    out = []
    for text in prompts:
        toks = prompt_tokens(model, text).to(model_device(model))
        clean = model(toks, return_type="logits")[0].float()                                  # (n, vocab)
        hooked = model.run_with_hooks(toks, return_type="logits", fwd_hooks=[(name, hook)])[0].float()
        target = toks[0, 1:]
        loss = [float(torch.nn.functional.cross_entropy(z[:-1], target)) for z in (clean, hooked)]
        tops = []
        for z in (clean, hooked):
            p = z[-1].softmax(-1)
            v, i = p.topk(k)
            tops.append([(model.tokenizer.decode([t]), float(x)) for t, x in zip(i.tolist(), v.tolist())])
        out.append(NextToken(text, tops[0], tops[1], loss[0], loss[1], clean[-1].cpu(), hooked[-1].cpu()))
    return out


def format_next_token(changes: Sequence[NextToken]) -> str:
    """Before/after tables of the next-token distributions, with the change in loss."""
    lines = []
    for c in changes:
        lines.append(f"{c.prompt!r}: loss {c.loss_before:.3f} -> {c.loss_after:.3f} nats/token "
                     f"({c.loss_after - c.loss_before:+.3f})")
        for (tb, pb), (ta, pa) in zip(c.before, c.after):
            lines.append(f"    {tb!r:>14} {pb:6.1%}    |  {ta!r:>14} {pa:6.1%}")
    return "\n".join(lines)
