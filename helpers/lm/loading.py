"""Loading a language model through TransformerLens' ``TransformerBridge``, and the corpus.

The bridge is booted from a Hugging Face model loaded here (so ``offline=True`` can forbid the
network for the weights *and* the tokenizer), then moved, whole, to the course's device. The
move matters: ``boot_transformers(hf_model=...)`` takes a pre-loaded model as it is and only
records the requested device in ``cfg.device``; it calls ``.to(device)`` only on a model it
loads itself. Without the move the weights stay on the CPU while the SAEs sit on the GPU.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from helpers.device import resolve_device
from helpers.lm.offline import corpus_documents, model_dir, split_documents

# Hub requests that hang are worse than ones that fail: give up after these many seconds
# (huggingface_hub reads them when it is first imported; a reader's own settings win).
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
HUB_PROBE_SECONDS = 10.0
"""How long ``load_model`` waits for the hub to answer one request before it treats the hub as
unreachable. huggingface_hub's own session has no overall timeout: on a network that accepts a
connection and never answers it would wait for ever."""

OFFLINE_MODEL = "tiny-offline"
"""The name of the model shipped in ``data/tiny_lm``."""
ONLINE_MODEL = "roneneldan/TinyStories-1Layer-21M"
"""The one-line switch to a pretrained model (needs network access): one layer like the offline
model (a GPT-Neo trained on TinyStories, d_mlp = 4096), so notebook 04's premise still holds: its
MLP is followed only by linear maps and the softmax."""
ONLINE_MULTILAYER_MODEL = "EleutherAI/pythia-70m"
"""A second pretrained option, closer to the report's language model (6 layers, GPT-style); its
layer-0 MLP feeds five more layers, so direct logit effects no longer tell the whole story."""
CORPUS = "python-stdlib"
"""The text activations are harvested on: the held-out part of the tiny model's corpus
(pydoc help topics and standard-library source files), available offline on every machine."""
CORPORA = {ONLINE_MODEL: "roneneldan/TinyStories"}
"""Text from an online model's own distribution: a Hugging Face dataset (id or local folder),
read streamed through ``datasets``, its ``validation`` split, field ``text``. A model not listed
here reads ``CORPUS``: children's stories are what TinyStories-1L has learned to predict, and
Python source would show its SAEs features of text it has never seen."""


def _source(name: str) -> str:
    """The folder or hub id ``from_pretrained`` should read for ``name``."""
    if name == OFFLINE_MODEL:
        folder = model_dir()
        missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"The offline model is incomplete: {', '.join(missing)} missing in {folder}. " + _missing_model_advice()
            )
        return str(folder)
    return str(Path(name)) if Path(name).is_dir() else name


def _missing_model_advice() -> str:
    """What to do about missing offline-model files: fix COURSE_DATA when it is set, else rebuild them."""
    env = os.environ.get("COURSE_DATA")
    if env:
        what = "does not hold the offline model's files" if Path(env).is_dir() else "does not exist"
        return (f"COURSE_DATA points at {env}, which {what}: unset COURSE_DATA to use the course's own "
                "data/ folder, or point it at the folder that holds tiny_lm/.")
    return ("Rebuild it with `python scripts/build_tiny_lm.py` (44 minutes of training on a 2-core CPU; "
            "data/tiny_lm/README.md has the details).")


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves (False at once on a machine with no network)."""
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _hub_answers() -> bool:
    """Whether the hub answers a HEAD request within ``HUB_PROBE_SECONDS`` (any HTTP status counts)."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_PROBE_SECONDS):
            return True
    except urllib.error.HTTPError:  # it answered, if only with an error status
        return True
    except (OSError, ValueError):   # no route, refused, timed out, or a malformed HF_ENDPOINT
        return False


def offline_model_info() -> dict:
    """What ``scripts/build_tiny_lm.py`` recorded when it built the offline model (``training.json``):
    corpus, training, held-out loss and the MLP's structure (``current_token_r2``, ``pcs_90``,
    ``pcs_99``)."""
    path = model_dir() / "training.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing. " + _missing_model_advice())
    return json.loads(path.read_text())


def load_model(name: str = OFFLINE_MODEL, device: str | torch.device | None = None, offline: bool = False):
    """A ``TransformerBridge`` for ``name`` on ``device``: ``"tiny-offline"``, a local folder, or a hub id.

    ``offline=True`` never touches the network (a hub id must then be in the local HF cache).
    Hub requests time out (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``) instead of hanging,
    and a hub that does not answer within ``HUB_PROBE_SECONDS`` is treated as unreachable (only the
    local cache is tried). The weights are loaded in float32.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a model name such as {OFFLINE_MODEL!r}, got {name!r}")
    dev = resolve_device(device)  # "meta": the architecture with no weights in memory
    source = _source(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    hub_id = source == name and not offline and not Path(source).is_dir()
    no_dns = hub_id and not _hub_resolves()
    silent = hub_id and not no_dns and not _hub_answers()
    if no_dns or silent:  # only the local cache can serve it: skip retries (or a wait with no end)
        offline = True
    try:
        # float32 whatever the checkpoint stores (Pythia's are fp16): the SAEs, hooks and
        # notebook cells all compute in float32, and a pre-loaded model is not cast by the bridge.
        hf = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline).float()
        tok = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except (OSError, ConnectionError, TimeoutError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ValueError(
            f"Could not load model {name!r}: it is not {OFFLINE_MODEL!r}, not a local folder, and the "
            f"Hugging Face hub did not provide it ({type(err).__name__}: {first})"
            + (" (no network: the hub's address does not resolve, and the model is not in the local cache)"
               if no_dns else "")
            + (f" (the hub accepted no request within {HUB_PROBE_SECONDS:g} s, and the model is not in the local cache)"
               if silent else "")
            + ". Check the name "
            f"(e.g. {ONLINE_MODEL!r}) and the network. Without a network use load_model({OFFLINE_MODEL!r}), "
            "which ships with the course, or pass offline=True (or set HF_HUB_OFFLINE=1) for a model "
            "already in the local Hugging Face cache."
        ) from err
    # Boot on the CPU, where the weights were loaded (the bridge reads real values at boot,
    # e.g. to split GPT-2's fused QKV matrix), then move everything at once.
    model = TransformerBridge.boot_transformers(source, hf_model=hf, tokenizer=tok, device="cpu")
    model.eval()
    move_model(model, dev)
    model.course_name = name  # a readable prefix for cache folders (the key hashes the weights)
    return model


def move_model(model, device: str | torch.device):
    """Move a bridge and the Hugging Face model inside it to ``device``; update ``cfg.device``.

    ``original_model`` is kept outside the bridge's registered modules, so ``nn.Module.to``
    alone would leave it behind.
    """
    dev = torch.device(device)
    torch.nn.Module.to(model, dev)  # the bridge's own parameters and buffers, without its printing .to()
    original = getattr(model, "original_model", None)
    if isinstance(original, torch.nn.Module):
        original.to(dev)
    model.cfg.device = str(dev)
    return model


def model_device(model) -> torch.device:
    """The device of the model's weights (where its inputs must go)."""
    return next(model.parameters()).device


def mlp_hooks(layer: int = 0) -> dict[str, str]:
    """Hook names of one MLP: its post-activation (the SAE's input) and its output."""
    return {"post": f"blocks.{layer}.mlp.hook_post", "out": f"blocks.{layer}.hook_mlp_out"}


def weights_fingerprint(model) -> str:
    """A hash of the model's weights and vocabulary: the identity of the activations it makes.

    A name is not an identity (a retrained ``data/tiny_lm``, a fine-tuned copy in the same
    folder): caches keyed by it would hand back another model's activations.
    """
    h = hashlib.blake2b(digest_size=16)
    module = getattr(model, "original_model", model)
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.device.type != "meta":
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    tok = getattr(model, "tokenizer", None)
    if tok is not None:  # the token ids in the cache depend on the tokenizer too
        h.update(repr(sorted(tok.get_vocab().items())).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _documents() -> tuple[list[str], list[str]]:
    """(train, held-out) documents, read once per process (parsing the stdlib takes seconds)."""
    return split_documents(corpus_documents())


def corpus_name(model) -> str:
    """The corpus ``corpus_token_windows`` reads for ``model``: its entry in ``CORPORA``, else ``CORPUS``."""
    return CORPORA.get(getattr(model, "course_name", None), CORPUS)


def dataset_documents(source: str, n_chars: int, split: str = "validation", field: str = "text") -> list[str]:
    """The first documents of a Hugging Face dataset (hub id or local folder), streamed until
    they hold ``n_chars`` characters: nothing beyond them is downloaded."""
    try:
        from datasets import load_dataset
    except ImportError as err:  # TransformerLens installs it; a bare environment may not have it
        raise ImportError(f"Reading the corpus {source!r} needs the datasets library: pip install datasets") from err
    docs, total = [], 0
    for row in load_dataset(source, split=split, streaming=True):
        if field not in row:
            raise ValueError(f"the {split!r} split of {source!r} has no {field!r} field; its fields are {sorted(row)}")
        text = row[field]
        if text and text.strip():
            docs.append(text)
            total += len(text)
            if total >= n_chars:
                break
    if not docs:
        raise ValueError(f"the {split!r} split of {source!r} has no text in its {field!r} field")
    return docs


def corpus_token_windows(model, n_tokens: int, seq_len: int = 128) -> torch.Tensor:
    """(n_seq, seq_len) token windows from the model's corpus (``corpus_name``), each starting
    with the BOS token.

    For the stdlib corpus the held-out documents of the offline model's corpus
    (``helpers.lm.offline``) come first (text it never trained on), then the training documents if the budget needs more. A
    dataset of ``CORPORA`` is read from its validation split (text the model never trained on).
    """
    name = corpus_name(model)
    if name == CORPUS:
        train_docs, held = _documents()
    else:  # about 4 characters per token in English prose; twice that, so one pass suffices
        train_docs, held = [], dataset_documents(name, 8 * n_tokens)
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    need = -(-n_tokens // seq_len)  # windows
    body = seq_len - 1
    stream: list[int] = []
    for doc in held + train_docs:
        stream.append(bos)
        stream.extend(tok(doc, add_special_tokens=False)["input_ids"])
        if len(stream) >= need * body:
            break
    n = min(need, len(stream) // body)
    if n < need:
        raise ValueError(f"n_tokens: the corpus {name!r} holds only {n * seq_len} tokens of windows, asked for {n_tokens}")
    w = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), w], dim=1)
