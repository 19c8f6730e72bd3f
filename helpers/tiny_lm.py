"""The course's offline language model: a one-layer GPT-2 trained on Python's own documentation.

Notebook 04 needs a real transformer whose MLP activations have structure, and CI has no
network. Every Python install carries English prose: the help topics in ``pydoc_data`` and the
docstrings of the standard library. This module turns them into a corpus, trains a byte-level
BPE tokenizer on it (``tokenizers``) and then a small GPT-2 (``transformers``), and saves
everything in the Hugging Face layout under ``data/tiny_lm/`` (config.json,
model.safetensors, tokenizer.json, README.md), so ``helpers.lm.load_model("tiny-offline")``
loads it through the same ``TransformerBridge`` path as a model from the hub.

One layer, like the models in the source notes on softmax readouts: its MLP is followed only by
linear maps (unembedding) and the softmax, which is the question notebook 04 asks.

Rebuild (about fifteen minutes on two busy CPU cores): ``python -m helpers.tiny_lm``
(``--steps`` / ``--batch`` trade time for a lower loss; ``--out`` writes elsewhere).
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import sysconfig
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from helpers.paths import atomic_write, data_dir

MODEL_DIR_NAME = "tiny_lm"
VOCAB_SIZE = 4096
N_CTX = 128
HELD_OUT_FRACTION = 0.05


def model_dir() -> Path:
    """``data/tiny_lm``: where the offline model lives."""
    return data_dir() / MODEL_DIR_NAME


# --------------------------------------------------------------------------------------
# The corpus: English prose every Python install carries
# --------------------------------------------------------------------------------------
def _stdlib_docstrings(max_chars: int) -> list[str]:
    """Module, class and function docstrings of the standard library, read with ``ast``
    (nothing is imported), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip")
    out, total = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in skip or part.startswith("test") for part in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:  # skip one-liners: mostly signatures, little prose
                    out.append(doc.strip())
                    total += len(doc)
        if total >= max_chars:
            break
    return out


def corpus_documents(max_docstring_chars: int = 3_000_000) -> list[str]:
    """The corpus as a list of documents: pydoc help topics, then stdlib docstrings."""
    import pydoc_data.topics as topics

    docs = [topics.topics[k].strip() for k in sorted(topics.topics)]
    return docs + _stdlib_docstrings(max_docstring_chars)


def split_documents(docs: list[str]) -> tuple[list[str], list[str]]:
    """A fixed train / held-out split: every 20th document is held out."""
    every = round(1 / HELD_OUT_FRACTION)
    return [d for i, d in enumerate(docs) if i % every], [d for i, d in enumerate(docs) if i % every == 0]


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


def train(steps: int = 800, batch: int = 16, lr: float = 3e-3, seed: int = 0, out: Path | None = None) -> dict:
    """Build the corpus, tokenizer and model, train, save to ``out`` (default data/tiny_lm)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2))  # a laptop-friendly default; CI shares 2 cores
    out = model_dir() if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    docs = corpus_documents()
    train_docs, held_docs = split_documents(docs)
    tok = train_tokenizer(train_docs)
    train_ids, held_ids = encode_documents(tok, train_docs), encode_documents(tok, held_docs)
    cfg = make_config(tok.get_vocab_size())
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    warmup = max(steps // 50, 1)
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
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    held = held_out_loss(model, held_ids)
    seconds = time.perf_counter() - t0

    with atomic_write(out / "tokenizer.raw.json") as tmp:
        tok.save(str(tmp))
    # The Hugging Face layout (tokenizer.json + tokenizer_config.json), which AutoTokenizer and
    # TransformerBridge read from the folder like any hub model's.
    wrap_tokenizer(out / "tokenizer.raw.json").save_pretrained(str(out))
    (out / "tokenizer.raw.json").unlink()
    model.save_pretrained(str(out), safe_serialization=True)  # config.json + model.safetensors
    info = {"corpus_documents": len(docs), "train_tokens": int(len(train_ids)), "held_out_tokens": int(len(held_ids)),
            "vocab_size": tok.get_vocab_size(), "n_layer": cfg.n_layer, "d_model": cfg.n_embd, "d_mlp": cfg.n_inner,
            "n_ctx": N_CTX, "steps": steps, "batch": batch, "tokens_seen": steps * batch * N_CTX,
            "held_out_loss_nats": round(held, 4), "train_seconds": round(seconds, 1),
            "python": sys.version.split()[0], "torch": torch.__version__}
    with atomic_write(out / "training.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    (out / "README.md").write_text(_readme(info))
    return info


def _readme(info: dict) -> str:
    return f"""# tiny_lm: the course's offline language model

A {info['n_layer']}-layer GPT-2 (d_model {info['d_model']}, MLP {info['d_mlp']}, {info['n_ctx']}-token context,
byte-level BPE vocabulary of {info['vocab_size']}) trained from scratch by `helpers.tiny_lm` on the English
prose every Python install carries: the `pydoc_data` help topics and the standard library's docstrings
({info['corpus_documents']} documents, {info['train_tokens']:,} training tokens; every 20th document held out).

- held-out loss: **{info['held_out_loss_nats']} nats/token** ({info['held_out_tokens']:,} held-out tokens)
- training: {info['steps']} steps of {info['batch']} x {info['n_ctx']} tokens ({info['tokens_seen']:,} tokens seen),
  {info['train_seconds']:.0f} s on CPU (Python {info['python']}, torch {info['torch']})

Files: `config.json` + `model.safetensors` (Hugging Face GPT-2 layout), `tokenizer.json` (`tokenizers`),
`training.json` (the numbers above). Notebook 04 loads it with `helpers.lm.load_model("tiny-offline")`,
through TransformerLens' `TransformerBridge`, exactly as it loads a model from the hub.

Rebuild it (the corpus depends on the Python version, so the numbers move slightly):

```bash
python -m helpers.tiny_lm --steps {info['steps']} --batch {info['batch']}
```

More steps give a lower loss and cleaner features (the defaults are the settings above).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description="Train the course's offline tiny language model into data/tiny_lm.")
    ap.add_argument("--steps", type=int, default=800, help="optimizer steps (default: the shipped model's)")
    ap.add_argument("--batch", type=int, default=16, help="sequences of 128 tokens per step")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print(json.dumps(train(steps=args.steps, batch=args.batch, out=args.out)))


if __name__ == "__main__":
    main()
