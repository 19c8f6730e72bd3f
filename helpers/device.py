"""Where the course runs and where its random numbers come from.

* Devices: ``get_device()`` is the torch device every helper and notebook uses (the argument,
  else the ``COURSE_DEVICE`` environment variable, else cuda > mps > cpu); ``resolve_device()``
  adds ``"meta"``, and ``parse_device()`` turns a bad name into an error that says what to pass.
* Randomness: ``course_seed()`` reads ``COURSE_SEED`` (default 0); ``stream_seed()`` derives one
  seed per named stream from it, so every stream moves at once, and ``rng()`` is a generator for
  one stream. ``seed_everything()`` seeds Python's, NumPy's and torch's global generators, for a
  reader's own calls (the helpers never draw from them).
* Two checks the trainers share: ``check_int()`` (a size, step count or seed of a config is an
  int, never a bool, at least a minimum) and ``cpu_threads()`` (small CPU work on one thread).

How big the runs are at each ``TUTORIAL_SCALE`` is ``helpers.course.sizes``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from numbers import Integral

import numpy as np
import torch

_DEVICE_KINDS = ("cpu", "cuda", "mps")


def parse_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``torch.device(device)``, or a ValueError that names the argument ``name`` and says what to pass.

    Only the name is checked (any torch device type parses); ``get_device`` checks that the course
    runs there and that it is available.
    """
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        fix = ("or unset COURSE_DEVICE to pick the best one automatically" if name == "COURSE_DEVICE"
               else "or leave it None to pick the best one")
        raise ValueError(f"Unknown device: {name}={device!r} is not a torch device: use 'cpu', 'cuda' "
                         f"(or 'cuda:0') or 'mps', {fix}.") from err


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the argument, else ``$COURSE_DEVICE``, else cuda > mps > cpu.

    An unknown or unavailable device is a clear error rather than a crash deep in a loop.
    """
    choice = device if device is not None else os.environ.get("COURSE_DEVICE") or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = parse_device(choice, "device" if device is not None else "COURSE_DEVICE")
    if dev.type not in _DEVICE_KINDS:
        raise ValueError(f"Unsupported device {choice!r}: the course runs on {', '.join(_DEVICE_KINDS)}.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {choice!r} was asked for, but torch sees no CUDA GPU here. Use 'cpu'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"Device {choice!r} was asked for, but MPS is not available here. Use 'cpu'.")
    return dev


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``get_device``, plus ``"meta"`` (shapes without memory: how the tests check placement).

    The one device check of the SAEs, the toy models and ``lm.load_model``.
    """
    if device is not None and parse_device(device).type == "meta":
        return torch.device("meta")
    return get_device(device)


def check_int(name: str, value, minimum: int | None = None) -> None:
    """Raise unless ``value`` is an int (numpy's too, never a bool) of at least ``minimum``:
    the check of the sizes, step counts and seeds of the course's configs."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}): pass a whole number"
                        + ("" if minimum is None else f" >= {minimum}"))
    if minimum is not None and value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, "an integer")
        raise ValueError(f"{name} must be {kind} (at least {minimum}), got {value}")


def course_seed() -> int:
    """The course's one seed knob: ``$COURSE_SEED`` (a whole number, default 0).

    Every random stream of the course (data, initialisations, sampling, resampling) is derived
    from it through ``stream_seed``, so ``COURSE_SEED=1`` gives a whole new run of every
    notebook, and equal values give identical runs. The findings the notebooks state are meant
    to hold for any value: try one.
    """
    raw = os.environ.get("COURSE_SEED", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"COURSE_SEED={raw!r}: set it to a whole number >= 0 (e.g. COURSE_SEED=1), "
                         "or unset it for the default run (0).")
    return value


def stream_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream (``"ground-truth"``, ``"sae-init"``, ...).

    Equal user seeds must not give equal random numbers in different places: with both the
    ground-truth features and an SAE's orthogonal init drawn from ``manual_seed(0)``, the
    init *is* (a linear map of) the answer, and the SAE looks far better than it is.
    A nonzero ``COURSE_SEED`` (``course_seed()``) moves every stream at once.
    """
    salt = course_seed()
    text = f"{stream}:{seed}" if salt == 0 else f"{stream}:{seed}:course-seed={salt}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: a valid torch seed


def rng(seed: int = 0, stream: str = "notebook", device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator for one named stream: ``torch.rand(..., generator=rng(1))``.

    Seeded through ``stream_seed``, so it follows ``COURSE_SEED`` like every other stream.
    """
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


@contextlib.contextmanager
def reseeded(generator: torch.Generator, seed: int):
    """Inside the block ``generator`` draws from ``seed``; afterwards it continues where it was.

    A data source's ``fixed_stream`` uses it: an evaluation or a cached training run then sees the
    same samples however much was drawn from the source before."""
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield generator
    finally:
        generator.set_state(state)


@contextlib.contextmanager
def cpu_threads(device: torch.device, work: int, threshold: int):
    """Run small CPU work on one thread; leave GPUs and large work alone.

    A step of a small stack is many tiny ops, and with two threads each op waits for the other;
    on a busy machine that wait is a scheduler time slice (a toy sweep was measured 100x
    slower), while one thread loses little on an idle one. ``work``: elements touched per step; above ``threshold`` torch's thread pool is kept.
    """
    if torch.device(device).type != "cpu" or work > threshold:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same.

    The helpers never draw from these global generators (each stream has its own generator);
    this covers a reader's own ``torch.randn(...)`` calls. A nonzero ``COURSE_SEED`` moves it too.
    """
    if course_seed():
        seed = stream_seed(seed, "global") % 2**32  # numpy takes 32-bit seeds
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
