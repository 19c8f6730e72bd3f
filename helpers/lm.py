"""SAEs on a language model's MLP: loading, harvesting activations, evaluating, reading features.

Models load only through TransformerLens' ``TransformerBridge`` (3.9 and 4.x share it and its
hook names), so the course works beside SAELens, which pins TransformerLens 3.9.

* ``load_model("tiny-offline")``: the one-layer GPT-2 that ``helpers.tiny_lm`` trained on
  Python's documentation, read from ``data/tiny_lm`` (no network). Any other name is a
  Hugging Face model id (e.g. ``"EleutherAI/pythia-70m"``, ``"gpt2"``), loaded the same way.
* ``harvest``: MLP activations for a token budget, in chunks, into a memory-mapped on-disk
  cache keyed by model, hooks, corpus and budget; a second call only opens the files.
* ``ce_with_sae`` / ``evaluate_saes``: the cross-entropy loss with the SAE's reconstruction
  spliced into the MLP (a hook), against the clean model and a zero-ablated MLP; L0, FVU,
  dead and dense latents.
* feature reading: top activating contexts, logit effects, each latent's effect on the
  residual stream, and the pair geometry of notebook 04's section 5. Figures and the HTML
  view of contexts are in ``helpers.plotting_lm``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import get_device
from helpers.paths import atomic_write, cache_dir, cache_key

OFFLINE_MODEL = "tiny-offline"
"""The name of the model shipped in ``data/tiny_lm``."""
ONLINE_MODEL = "EleutherAI/pythia-70m"
"""A pretrained model close to the report's (6 layers, GPT-style); needs network access."""
CORPUS = "python-docs"
"""The text activations are harvested on: the held-out part of the tiny model's corpus
(pydoc topics and standard-library docstrings), available offline on every machine."""


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def load_model(name: str = OFFLINE_MODEL, device: str | torch.device | None = None, offline: bool = False):
    """A ``TransformerBridge`` for ``name``: ``"tiny-offline"``, a local folder, or a hub id.

    ``offline=True`` never touches the network (a hub id must then be in the local HF cache).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    dev = get_device(device)
    if name == OFFLINE_MODEL:
        from helpers.tiny_lm import model_dir

        folder = model_dir()
        missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"The offline model is incomplete: {', '.join(missing)} missing in {folder}. "
                "Rebuild it with `python -m helpers.tiny_lm` (about ten minutes on a CPU)."
            )
        source = str(folder)
    elif Path(name).is_dir():
        source = str(Path(name))
    else:
        source = name
    try:
        hf = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline)
        tok = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except OSError as err:
        raise ValueError(
            f"Could not load model {name!r}: it is not {OFFLINE_MODEL!r}, not a local folder, and the "
            f"Hugging Face hub did not provide it ({type(err).__name__}). Check the name (e.g. "
            f"{ONLINE_MODEL!r}) and the network, or use {OFFLINE_MODEL!r}."
        ) from err
    model = TransformerBridge.boot_transformers(source, hf_model=hf, tokenizer=tok, device=str(dev))
    model.eval()
    model.course_name = name  # used in cache keys
    return model


def mlp_hooks(layer: int = 0) -> dict[str, str]:
    """Hook names of one MLP: its post-activation (the SAE's input) and its output."""
    return {"post": f"blocks.{layer}.mlp.hook_post", "out": f"blocks.{layer}.hook_mlp_out"}


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------
def corpus_token_windows(model, n_tokens: int, seq_len: int = 128) -> torch.Tensor:
    """(n_seq, seq_len) token windows from the corpus, each starting with the BOS token.

    The held-out documents of ``helpers.tiny_lm`` come first (text the offline model never
    trained on), then the training documents if the budget needs more.
    """
    from helpers.tiny_lm import corpus_documents, split_documents

    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    train_docs, held = split_documents(corpus_documents())
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    need = -(-n_tokens // seq_len)  # windows
    stream: list[int] = []
    for doc in held + train_docs:
        stream.append(bos)
        stream.extend(tok(doc, add_special_tokens=False)["input_ids"])
        if len(stream) >= need * (seq_len - 1):
            break
    body = seq_len - 1
    n = min(need, len(stream) // body)
    if n < need:
        raise ValueError(f"the corpus holds only {n * seq_len} tokens of windows, asked for {n_tokens}")
    w = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), w], dim=1)


# --------------------------------------------------------------------------------------
# Harvesting into a memory-mapped cache
# --------------------------------------------------------------------------------------
class Activations(NamedTuple):
    """Harvested activations: arrays are memory-mapped from the cache (read-only)."""

    tokens: np.ndarray
    """(n_seq, seq_len) int32 token ids."""
    acts: dict[str, np.ndarray]
    """hook kind ('post', 'out') -> (n_seq * seq_len, d) float32 activations, row = token."""
    folder: Path
    from_cache: bool
    seconds: float
    """Time this call took (loading, when from_cache)."""

    def sampler(self, kind: str = "post", device: str | torch.device | None = None, seed: int = 0,
                skip_bos: bool = True):
        """A ``sample_fn(n)`` for ``train_sae``: random rows of one activation array."""
        arr = self.acts[kind]
        dev = get_device(device)
        rows = np.arange(arr.shape[0])
        if skip_bos:  # the BOS position's activations are a constant outlier; SAEs skip it
            rows = rows[rows % self.tokens.shape[1] != 0]
        data = torch.from_numpy(np.ascontiguousarray(arr[rows])).to(dev)
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def sample(n: int) -> torch.Tensor:
            idx = torch.randint(0, data.shape[0], (n,), generator=gen).to(dev)
            return data[idx]

        return sample


def harvest(model, n_tokens: int, layer: int = 0, kinds: Sequence[str] = ("post", "out"), seq_len: int = 128,
            batch_size: int = 16, progress: bool = True) -> Activations:
    """MLP activations for ``n_tokens`` corpus tokens, cached on disk and memory-mapped.

    Activations go to ``.npy`` files chunk by chunk (memory stays at one batch however large
    the budget), into a temporary folder renamed into place only when complete, so an
    interrupted harvest is never mistaken for a finished one. The key covers the model, the
    layer and hooks, the corpus and the budget.
    """
    hooks = mlp_hooks(layer)
    for k in kinds:
        if k not in hooks:
            raise ValueError(f"unknown activation kind {k!r}: use 'post' (MLP neurons) or 'out' (MLP output)")
    key = cache_key({"model": getattr(model, "course_name", model.cfg.model_name), "layer": layer, "kinds": list(kinds),
                     "corpus": CORPUS, "n_tokens": n_tokens, "seq_len": seq_len, "version": 1})
    folder = cache_dir("activations") / f"{getattr(model, 'course_name', 'model').replace('/', '_')}-L{layer}-{key}"
    t0 = time.perf_counter()
    if (folder / "meta.json").is_file():
        return _open(folder, kinds, True, t0)

    windows = corpus_token_windows(model, n_tokens, seq_len)
    n_seq = windows.shape[0]
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    dims = {"post": model.cfg.d_mlp, "out": model.cfg.d_model}
    outs = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=np.float32, shape=(n_seq * seq_len, dims[k]))
            for k in kinds}
    np.save(tmp / "tokens.npy", windows.numpy().astype(np.int32))
    dev = next(model.parameters()).device
    grabbed: dict[str, torch.Tensor] = {}

    def grab(kind):
        def hook(x, hook):
            grabbed[kind] = x.detach()
            return x
        return hook

    fwd = [(hooks[k], grab(k)) for k in kinds]
    with torch.no_grad():
        for start in tqdm(range(0, n_seq, batch_size), desc=f"harvesting {n_seq * seq_len:,} tokens",
                          disable=not progress):
            toks = windows[start:start + batch_size].to(dev)
            model.run_with_hooks(toks, fwd_hooks=fwd, return_type=None)
            for k in kinds:
                outs[k][start * seq_len:(start + len(toks)) * seq_len] = grabbed[k].reshape(-1, dims[k]).float().cpu().numpy()
    for arr in outs.values():
        arr.flush()
    del outs
    with atomic_write(tmp / "meta.json") as t:
        t.write_text(json.dumps({"n_seq": n_seq, "seq_len": seq_len, "kinds": list(kinds), "layer": layer}))
    if folder.exists():  # a concurrent run finished first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return _open(folder, kinds, False, t0)


def _open(folder: Path, kinds: Sequence[str], from_cache: bool, t0: float) -> Activations:
    tokens = np.load(folder / "tokens.npy")
    acts = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in kinds}
    return Activations(tokens, acts, folder, from_cache, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# Evaluating an SAE inside the model
# --------------------------------------------------------------------------------------
class SpliceResult(NamedTuple):
    clean: float
    """Cross-entropy (nats/token) of the unchanged model."""
    with_sae: float
    """... with the MLP activations replaced by the SAE's reconstruction."""
    zero_ablated: float
    """... with the MLP activations set to zero."""
    recovered: float
    """(zero - with_sae) / (zero - clean): 1 is perfect, 0 is no better than deleting the MLP."""


class Baselines(NamedTuple):
    """The two reference losses CE loss recovered is measured between (nats/token)."""

    clean: float
    zero_ablated: float


def _splice_loss(model, tokens: torch.Tensor, fwd_hooks: list, batch_size: int) -> float:
    """Mean next-token loss over ``tokens`` (n_seq, seq_len) with ``fwd_hooks`` applied."""
    dev = next(model.parameters()).device
    total = 0.0
    for start in range(0, tokens.shape[0], batch_size):
        toks = tokens[start:start + batch_size].to(dev)
        loss = model.run_with_hooks(toks, return_type="loss", fwd_hooks=fwd_hooks) if fwd_hooks else \
            model(toks, return_type="loss")
        total += float(loss) * len(toks)  # weight by sequences: a short last batch counts less
    return total / tokens.shape[0]


def _zero_after_bos(x, hook):
    y = x.clone()
    y[:, 1:] = 0
    return y


@torch.no_grad()
def ce_baselines(model, tokens: torch.Tensor | np.ndarray, layer: int = 0, batch_size: int = 16) -> Baselines:
    """Loss of the clean model and of the model with the MLP's hidden activations zeroed."""
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    hook = mlp_hooks(layer)["post"]
    return Baselines(_splice_loss(model, tokens, [], batch_size),
                     _splice_loss(model, tokens, [(hook, _zero_after_bos)], batch_size))


@torch.no_grad()
def ce_with_sae(model, tokens: torch.Tensor | np.ndarray, sae, instance: int = 0, layer: int = 0,
                batch_size: int = 16, baselines: Baselines | None = None) -> SpliceResult:
    """Splice instance ``instance`` of ``sae`` into the MLP's post-activations and measure CE.

    The SAE reads and rewrites ``blocks.{layer}.mlp.hook_post`` at every position but the
    first (BOS), which it was not trained on and which stays untouched in all three runs.
    Pass ``baselines`` (from ``ce_baselines`` on the same tokens) to skip recomputing them.
    """
    from helpers.metrics import ce_loss_recovered

    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    one = sae.select(instance) if sae.cfg.n_instances > 1 else sae

    def splice(x, hook):
        y = x.clone()
        flat = x[:, 1:].reshape(-1, x.shape[-1]).float()            # (batch * (seq - 1), d_mlp)
        y[:, 1:] = one.decode(one.encode(flat))[0].reshape(x[:, 1:].shape).to(x.dtype)
        return y

    base = baselines or ce_baselines(model, tokens, layer, batch_size)
    with_sae = _splice_loss(model, tokens, [(mlp_hooks(layer)["post"], splice)], batch_size)
    return SpliceResult(base.clean, with_sae, base.zero_ablated,
                        float(ce_loss_recovered(base.clean, with_sae, base.zero_ablated)))


class SAEEval(NamedTuple):
    """One SAE instance judged on held-back activations and inside the model."""

    d_sae: int
    alpha: float
    l0: float
    """Mean active latents per token."""
    fvu: float
    """Fraction of variance unexplained (0 = perfect)."""
    dead: int
    """Latents that fire on none of the evaluation tokens."""
    dense: int
    """Latents that fire on more than ``dense_threshold`` of them."""
    ce: SpliceResult


@torch.no_grad()
def evaluate_saes(model, sae, acts: Activations, n_rows: int = 8192, n_seq: int = 32, layer: int = 0,
                  dense_threshold: float = 0.1, baselines: Baselines | None = None) -> list[SAEEval]:
    """Every instance of a stacked ``sae``: L0, FVU, dead and dense latents on the last
    ``n_rows`` harvested tokens (BOS rows left out), and CE loss recovered on ``n_seq`` windows."""
    from helpers.metrics import fvu, l0

    post = acts.acts["post"]
    seq_len = acts.tokens.shape[1]
    rows = np.arange(max(post.shape[0] - n_rows, 0), post.shape[0])
    rows = rows[rows % seq_len != 0]
    x = torch.from_numpy(np.asarray(post[rows], dtype=np.float32)).to(sae.device)  # (rows, d_mlp)
    c = sae.encode(x)                                                               # (inst, rows, d_sae)
    x_hat = sae.decode(c)                                                           # (inst, rows, d_mlp)
    rate = (c > 0).float().mean(1)                                                  # (inst, d_sae)
    tokens = acts.tokens[:n_seq]
    base = baselines or ce_baselines(model, tokens, layer)
    out = []
    for i, alpha in enumerate(sae.cfg.l1_coeffs):
        out.append(SAEEval(sae.cfg.d_sae, float(alpha), float(l0(c[i])), float(fvu(x, x_hat[i])),
                           int((rate[i] == 0).sum()), int((rate[i] > dense_threshold).sum()),
                           ce_with_sae(model, tokens, sae, instance=i, layer=layer, baselines=base)))
    return out


# --------------------------------------------------------------------------------------
# Reading features
# --------------------------------------------------------------------------------------
def latent_activations(sae, acts: np.ndarray, instance: int = 0, batch: int = 8192) -> np.ndarray:
    """(n_rows, d_sae) float32 latent activations of one SAE instance over ``acts``."""
    one = sae.select(instance) if sae.cfg.n_instances > 1 else sae
    out = np.empty((acts.shape[0], one.cfg.d_sae), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, acts.shape[0], batch):
            x = torch.from_numpy(np.array(acts[s:s + batch], dtype=np.float32)).to(one.device)
            out[s:s + batch] = one.encode(x)[0].cpu().numpy()
    return out


def top_contexts(latent_acts: np.ndarray, tokens: np.ndarray, k: int = 5, before: int = 10, after: int = 3):
    """The ``k`` strongest activations of one latent, each as (token ids, index of the token, value, window acts).

    ``latent_acts`` is one latent's (n_seq * seq_len,) activations, rows in ``tokens`` order."""
    seq_len = tokens.shape[1]
    order = np.argsort(-latent_acts)[:k]
    out = []
    for row in order:
        if latent_acts[row] <= 0:
            break
        s, p = divmod(int(row), seq_len)
        lo, hi = max(p - before, 0), min(p + after + 1, seq_len)
        out.append((tokens[s, lo:hi], p - lo, float(latent_acts[row]), latent_acts[s * seq_len + lo:s * seq_len + hi]))
    return out


@torch.no_grad()
def residual_effects(model, directions: torch.Tensor, layer: int = 0, chunk: int = 64) -> torch.Tensor:
    """(n, d_model) what each MLP-neuron-space direction adds to the residual stream: W_out^T v.

    Read off the model itself (so it works for any architecture the bridge supports): the
    directions are written into ``hook_post`` of a dummy sequence, one per position, and the
    MLP output minus the output for a zero vector is the linear map applied to them.
    """
    hooks = mlp_hooks(layer)
    dev = next(model.parameters()).device
    directions = directions.to(dev, torch.float32)
    n_ctx = model.cfg.n_ctx
    chunk = min(chunk, n_ctx - 1)
    outs = []
    for s in range(0, directions.shape[0], chunk):
        d = directions[s:s + chunk]
        toks = torch.zeros(1, d.shape[0] + 1, dtype=torch.long, device=dev)
        got = {}

        def put(x, hook, d=d):
            y = x.clone()
            y[0, 1:] = d.to(x.dtype)
            y[0, 0] = 0
            return y

        def grab(x, hook):
            got["out"] = x.detach()
            return x

        model.run_with_hooks(toks, return_type=None, fwd_hooks=[(hooks["post"], put), (hooks["out"], grab)])
        outs.append((got["out"][0, 1:] - got["out"][0, :1]).float())
    return torch.cat(outs)


@torch.no_grad()
def logit_effects(model, residual: torch.Tensor, k: int = 8) -> list[tuple[list[str], list[str]]]:
    """For each residual-stream direction: the k tokens it promotes most and suppresses most,
    through the unembedding (the final LayerNorm's scale is left out: a direct, linear read)."""
    W_U = model.W_U if hasattr(model, "W_U") else model.unembed.W_U  # (d_model, vocab)
    logits = residual.to(W_U.device, W_U.dtype) @ W_U  # (n, vocab)
    tok = model.tokenizer
    # Tokens that are a fragment of a multi-byte character decode to U+FFFD: unreadable, skipped.
    names = [tok.decode([t]) for t in range(logits.shape[1])]
    readable = torch.tensor([("\ufffd" not in n) and n.isprintable() for n in names], device=logits.device)
    logits = logits.masked_fill(~readable, float("nan"))
    out = []
    for row in logits:
        top = torch.topk(row.nan_to_num(float("-inf")), k).indices.tolist()
        bottom = torch.topk((-row).nan_to_num(float("-inf")), k).indices.tolist()
        out.append(([names[t] for t in top], [names[t] for t in bottom]))
    return out


def pick_latents(latent_acts: np.ndarray, tokens: np.ndarray, n: int = 4, min_freq: float = 1e-3,
                 max_freq: float = 3e-2, k: int = 20) -> np.ndarray:
    """``n`` latents worth reading first: moderately rare, and with a consistent trigger.

    A latent's *consistency* is the share of its ``k`` strongest activations that sit on its
    most common token (or follow its most common previous token). Pure single-token latents
    are easy to read but teach little, so half the picks are the most consistent latents and
    half come from the middle of the ranking (a trigger that is shared, but not one token).
    """
    freq = (latent_acts > 0).mean(0)
    cands = np.flatnonzero((freq >= min_freq) & (freq <= max_freq))
    if len(cands) < n:
        cands = np.argsort(-freq)[: max(n, 1)]
    flat = tokens.reshape(-1)
    seq_len = tokens.shape[1]
    score = np.empty(len(cands))
    for i, f in enumerate(cands):
        top = np.argsort(-latent_acts[:, f])[:k]
        top = top[latent_acts[top, f] > 0]
        cur = flat[top]
        prev = np.where(top % seq_len == 0, -1, flat[np.maximum(top - 1, 0)])
        score[i] = max(np.bincount(cur).max(), np.bincount(prev + 1).max()) / max(len(top), 1)
    order = cands[np.argsort(-score, kind="stable")]
    head = order[: (n + 1) // 2]
    middle = order[len(order) // 3: len(order) // 3 + n - len(head)]
    return np.concatenate([head, middle]).astype(int)


class PairGeometry(NamedTuple):
    """Pairs of latents of one SAE (upper triangle of the ``latents`` x ``latents`` matrix)."""

    latents: np.ndarray
    """(m,) the latents compared."""
    lift: np.ndarray
    """(pairs,) P(both fire) / (P(i) P(j)): above 1 they co-occur more often than chance."""
    output_cos: np.ndarray
    """(pairs,) cosine between the two latents' effects on the residual stream."""
    decoder_cos: np.ndarray
    """(pairs,) cosine between their decoder directions (in MLP-neuron space)."""


@torch.no_grad()
def pair_geometry(model, sae, latent_acts: np.ndarray, n_latents: int = 300, layer: int = 0) -> PairGeometry:
    """Co-occurrence, output similarity and decoder cosine for pairs of the ``n_latents`` most
    frequently firing latents of a single-instance ``sae``."""
    freq = (latent_acts > 0).mean(0)
    alive = np.flatnonzero(freq > 0)
    top = alive[np.argsort(-freq[alive], kind="stable")[:n_latents]]
    on = (latent_acts[:, top] > 0).astype(np.float32)                 # (tokens, m)
    p = on.mean(0)
    lift = (on.T @ on / len(on)) / np.outer(p, p)                       # (m, m)
    D = sae.decoder_directions()[0, torch.as_tensor(top, device=sae.device)]   # (m, d_mlp)
    E = torch.nn.functional.normalize(residual_effects(model, D, layer=layer), dim=-1)  # (m, d_model)
    iu = np.triu_indices(len(top), 1)
    return PairGeometry(top, lift[iu], (E @ E.T).cpu().numpy()[iu], (D @ D.T).cpu().numpy()[iu])


def geometry_table(geo: PairGeometry, similar_quantile: float = 0.9) -> dict[tuple[bool, bool], tuple[float, int]]:
    """The 2x2 summary: (output similar?, co-occur?) -> (mean decoder cosine, number of pairs).

    "Co-occur" means a lift above 1; "similar output" means the top ``1 - similar_quantile``
    of output cosines among the pairs.
    """
    cooc = geo.lift > 1.0
    similar = geo.output_cos > np.quantile(geo.output_cos, similar_quantile)
    out = {}
    for s in (True, False):
        for c in (False, True):
            m = (similar == s) & (cooc == c)
            out[s, c] = (float(geo.decoder_cos[m].mean()) if m.any() else float("nan"), int(m.sum()))
    return out
