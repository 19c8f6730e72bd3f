"""Build the course's offline language model: a one-layer GPT-2 trained on Python's own source and docs.

Notebook 04 needs a real transformer whose MLP activations have structure, and CI has no
network. Every Python install carries tens of MB of text: the standard library's source files
(code, comments and docstrings) and the ``pydoc`` help topics (``helpers.lm.offline``: the corpus
and its train / held-out split, which the package reads at run time too). This script trains a
byte-level BPE tokenizer on that corpus (``tokenizers``), prunes merges the corpus never uses,
trains a small GPT-2 (``transformers``), measures how much its MLP is more than a lookup table of
the current token (``helpers.lm.structure``), and saves everything in the Hugging Face layout
under ``data/tiny_lm/`` (config.json, model.safetensors, tokenizer.json, training.json,
README.md), so ``helpers.lm.load_model("tiny-offline")`` loads it through the same
``TransformerBridge`` path as a model from the hub.

One layer and 512 MLP neurons, the setting of Anthropic's *Towards Monosemanticity*: its MLP is
followed only by linear maps (unembedding) and the softmax, which is the question notebook 04 asks.

Rebuild (about 45 minutes on two CPU cores, with a progress bar): ``python scripts/build_tiny_lm.py``
(``--steps`` / ``--batch`` trade time for a lower loss; ``--out`` writes elsewhere).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's helpers, installed or not

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.lm.offline import corpus_documents, model_dir, split_documents
from helpers.paths import atomic_write

VOCAB_SIZE = 4096
N_CTX = 128


# --------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------
def train_tokenizer(docs: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (as GPT-2's), with <|endoftext|> between documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def prune_unused_merges(tok, counts) -> tuple[object, int]:
    """Drop merges whose token the encoded corpus never contains and no other merge builds on.

    ``counts[i]``: how often token id ``i`` occurs in the encoded corpus. A merge that is a leaf
    (no later merge uses its token) and whose token never occurs never fired on the corpus, so
    removing it leaves the corpus's encoding unchanged; repeated until nothing changes. The 256
    byte tokens stay, so any text still encodes. Returns the new tokenizer (ids renumbered in
    the old order) and the number of tokens removed.
    """
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    count_of = {t: int(counts[i]) if i < len(counts) else 0 for t, i in vocab.items()}
    removed: set[str] = set()
    while True:
        used = {part for m in merges for part in m}
        drop = {a + b for a, b in merges if a + b not in used and count_of.get(a + b, 0) == 0}
        if not drop:
            break
        merges = [m for m in merges if m[0] + m[1] not in drop]
        removed |= drop
    if not removed:
        return tok, 0
    kept = sorted((i, t) for t, i in vocab.items() if t not in removed)
    spec["model"]["vocab"] = {t: new for new, (_, t) in enumerate(kept)}
    spec["model"]["merges"] = [list(m) for m in merges]
    for added in spec.get("added_tokens", []):
        added["id"] = spec["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(spec)), len(removed)


def wrap_tokenizer(tokenizer_file: Path):
    """The saved tokenizer as a ``transformers`` fast tokenizer (what TransformerBridge wants)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def make_config(vocab_size: int, d_model: int = 128, n_layer: int = 1, n_head: int = 4):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_positions=N_CTX, n_embd=d_model, n_layer=n_layer, n_head=n_head,
                      n_inner=4 * d_model, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)


def encode_documents(tok, docs: list[str]) -> torch.Tensor:
    """All documents as one long token stream, each preceded by <|endoftext|>."""
    eot = tok.token_to_id("<|endoftext|>")
    ids: list[int] = []
    for enc in tok.encode_batch(docs):
        ids.append(eot)
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def held_out_loss(model, tokens: torch.Tensor, n_ctx: int = N_CTX, batch: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of ``tokens``."""
    model.eval()
    n = (len(tokens) - 1) // n_ctx
    windows = tokens[: n * n_ctx].view(n, n_ctx)
    losses = [model(windows[i:i + batch], labels=windows[i:i + batch]).loss.item() for i in range(0, n, batch)]
    model.train()
    return float(sum(losses) / len(losses))


def _windows(ids: torch.Tensor, n_tokens: int, seed: int) -> torch.Tensor:
    """(n, N_CTX) windows spread evenly over ``ids`` (a fixed, seeded sample), n*N_CTX <= n_tokens."""
    n_all = (len(ids) - 1) // N_CTX
    n = max(1, min(n_all, n_tokens // N_CTX))
    pick = torch.randperm(n_all, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return ids[: n_all * N_CTX].view(n_all, N_CTX)[pick]


@torch.no_grad()
def mlp_activations(model, windows: torch.Tensor, batch: int = 64) -> np.ndarray:
    """(windows * N_CTX, d_mlp) MLP neuron activations (after the GELU) of a Hugging Face GPT-2."""
    grabbed: list[torch.Tensor] = []
    hook = model.transformer.h[0].mlp.act.register_forward_hook(lambda m, i, o: grabbed.append(o.reshape(-1, o.shape[-1])))
    try:
        model.eval()
        for i in range(0, len(windows), batch):
            model(windows[i:i + batch])
    finally:
        hook.remove()
        model.train()
    return torch.cat(grabbed).float().numpy()


def measure_mlp(model, train_ids: torch.Tensor, held_ids: torch.Tensor, n_fit: int = 400_000,
                n_eval: int = 100_000):
    """``helpers.lm.structure.mlp_structure`` of the model's MLP: per-token means fitted on
    training text, variance explained and principal components measured on held-out text."""
    from helpers.lm.structure import mlp_structure

    fit_w, eval_w = _windows(train_ids, n_fit, seed=1), _windows(held_ids, n_eval, seed=2)
    acts = np.concatenate([mlp_activations(model, fit_w), mlp_activations(model, eval_w)])
    tokens = torch.cat([fit_w.reshape(-1), eval_w.reshape(-1)]).numpy()
    n_fit_rows = fit_w.numel()
    return mlp_structure(acts, tokens, np.arange(n_fit_rows), np.arange(n_fit_rows, len(tokens)),
                         vocab_size=model.config.vocab_size)


def train(steps: int = 15_000, batch: int = 32, lr: float = 3e-3, seed: int = 0, out: Path | None = None,
          eval_every: int = 1000) -> dict:
    """Build the corpus, tokenizer and model, train, measure, save to ``out`` (default data/tiny_lm)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2))  # a laptop-friendly default; CI shares 2 cores
    out = model_dir() if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("reading the corpus and training the tokenizer ...", flush=True)
    docs = corpus_documents()
    train_docs, held_docs = split_documents(docs)
    tok = train_tokenizer(train_docs)
    train_ids = encode_documents(tok, train_docs)
    counts = torch.bincount(train_ids, minlength=tok.get_vocab_size()).numpy()
    tok, pruned = prune_unused_merges(tok, counts)
    if pruned:  # new ids: encode again
        train_ids = encode_documents(tok, train_docs)
        counts = torch.bincount(train_ids, minlength=tok.get_vocab_size()).numpy()
    held_ids = encode_documents(tok, held_docs)
    unused = int((counts == 0).sum())
    print(f"{sum(map(len, docs)) / 1e6:.1f} M characters in {len(docs)} documents; {len(train_ids):,} training "
          f"and {len(held_ids):,} held-out tokens; {pruned} unused merges pruned", flush=True)
    cfg = make_config(tok.get_vocab_size())
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    warmup = max(steps // 50, 1)
    probe = _windows(held_ids, 32 * N_CTX * 8, seed=3)  # a fixed held-out sample for the progress bar
    curve: list[tuple[int, float]] = []
    bar = tqdm(range(steps), desc="training the tiny LM")
    for step in bar:
        for group in opt.param_groups:  # linear warm-up, then cosine decay to 10%
            frac = step / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
            group["lr"] = lr * frac
        starts = torch.randint(0, len(train_ids) - N_CTX - 1, (batch,), generator=gen)
        x = torch.stack([train_ids[s:s + N_CTX] for s in starts.tolist()])
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append((step + 1, round(held_out_loss(model, probe.reshape(-1)), 4)))
            bar.set_postfix(train=f"{loss.item():.3f}", held_out=f"{curve[-1][1]:.3f}")
    held = held_out_loss(model, held_ids)
    train_seconds = time.perf_counter() - t0
    structure = measure_mlp(model, train_ids, held_ids)
    print(structure.describe(), flush=True)

    with atomic_write(out / "tokenizer.raw.json") as tmp:
        tok.save(str(tmp))
    # The Hugging Face layout (tokenizer.json + tokenizer_config.json), which AutoTokenizer and
    # TransformerBridge read from the folder like any hub model's.
    wrap_tokenizer(out / "tokenizer.raw.json").save_pretrained(str(out))
    (out / "tokenizer.raw.json").unlink()
    model.save_pretrained(str(out), safe_serialization=True)  # config.json + model.safetensors
    info = {"corpus_documents": len(docs), "corpus_megabytes": round(sum(map(len, docs)) / 1e6, 1),
            "train_tokens": int(len(train_ids)), "held_out_tokens": int(len(held_ids)),
            "vocab_size": tok.get_vocab_size(), "merges_pruned": pruned, "tokens_never_seen_in_training": unused,
            "n_layer": cfg.n_layer, "d_model": cfg.n_embd, "d_mlp": cfg.n_inner,
            "n_ctx": N_CTX, "steps": steps, "batch": batch, "lr": lr, "tokens_seen": steps * batch * N_CTX,
            "held_out_loss_nats": round(held, 4), "held_out_curve": curve,
            "current_token_r2": round(structure.token_r2, 4), "pcs_90": structure.pcs_90, "pcs_99": structure.pcs_99,
            "structure_rows": [structure.fit_rows, structure.eval_rows],
            "train_seconds": round(train_seconds, 1), "python": sys.version.split()[0], "torch": torch.__version__}
    with atomic_write(out / "training.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    (out / "README.md").write_text(_readme(info))
    return info


def _readme(info: dict) -> str:
    return f"""# tiny_lm: the course's offline language model

A {info['n_layer']}-layer GPT-2 (d_model {info['d_model']}, MLP {info['d_mlp']}, {info['n_ctx']}-token context,
byte-level BPE vocabulary of {info['vocab_size']}) trained from scratch by `scripts/build_tiny_lm.py` on the text every
Python install carries: the standard library's source files (code, comments, docstrings) and the
`pydoc` help topics ({info['corpus_documents']} documents, {info['corpus_megabytes']} MB, {info['train_tokens']:,} training
tokens; every 20th document held out; {info['merges_pruned']} unused tokenizer merges pruned).

- held-out loss: **{info['held_out_loss_nats']} nats/token** ({info['held_out_tokens']:,} held-out tokens)
- its MLP: the current token explains **{100 * info['current_token_r2']:.0f}%** of the variance of the 512
  neuron activations on held-out text (per-token means fitted on training text);
  **{info['pcs_90']}** principal components hold 90% of that variance and **{info['pcs_99']}** hold 99%
- training: {info['steps']} steps of {info['batch']} x {info['n_ctx']} tokens ({info['tokens_seen']:,} tokens seen),
  {info['train_seconds']:.0f} s on CPU (Python {info['python']}, torch {info['torch']})

Files: `config.json` + `model.safetensors` (Hugging Face GPT-2 layout), `tokenizer.json` (`tokenizers`),
`training.json` (the numbers above, and the held-out loss during training). Notebook 04 loads it with
`helpers.lm.load_model("tiny-offline")`, through TransformerLens' `TransformerBridge`, exactly as it
loads a model from the hub.

Rebuild it (the corpus depends on the Python version, so the numbers move slightly):

```bash
python scripts/build_tiny_lm.py --steps {info['steps']} --batch {info['batch']}
```
"""


def main() -> None:
    ap = argparse.ArgumentParser(description="Train the course's offline tiny language model into data/tiny_lm.")
    ap.add_argument("--steps", type=int, default=15_000, help="optimizer steps (default: the shipped model's)")
    ap.add_argument("--batch", type=int, default=32, help="sequences of 128 tokens per step")
    ap.add_argument("--out", type=Path, default=None, help="folder to write the model to (default: data/tiny_lm)")
    args = ap.parse_args()
    print(json.dumps(train(steps=args.steps, batch=args.batch, out=args.out)))


if __name__ == "__main__":
    main()
