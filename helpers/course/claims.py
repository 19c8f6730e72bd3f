"""Claims: a sentence of the course, checked by the number it is about.

A notebook states what its result shows and, right after the computation, checks it::

    claim("the five features form a regular pentagon", gaps_deg, within=(62, 82), unit="°",
          label="neighbour gaps")
    ✔ the five features form a regular pentagon (neighbour gaps 70.9-73.4°)

    claim("MMCS at J=G reaches 0.99", mmcs, at_least=0.99)
    ✘ MMCS at J=G reaches 0.99 (measured 0.931; expected ≥ 0.99)

One line per claim, ✔ or ✘, with the measured value rounded to about three significant
digits (an array shows its range). When the environment variable ``COURSE_CLAIMS_STRICT``
is set (the test suite sets it: ``conftest.py``), a false claim also raises ``ClaimFailed``,
so a notebook run under nbval fails on it whatever outputs are stored beside it; a reader's
run prints ✘ and goes on. A claim that only holds for long runs names its scales and is
skipped, visibly, elsewhere. Every claim is kept in ``CLAIMS`` and, when the environment
variable ``COURSE_CLAIMS_FILE`` names a file, appended to it as one JSON line, so that
``benchmarks/course_runtime.py`` can report which claims held in a run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, NamedTuple, Sequence

import numpy as np

from helpers.course.sizes import SCALES, current_scale

HELD, FAILED, SKIPPED = "✔", "✘", "–"


class Claim(NamedTuple):
    """One checked sentence, as recorded in ``CLAIMS`` and in ``$COURSE_CLAIMS_FILE``."""

    notebook: str | None  # file name of the notebook, when the kernel knows it
    claim: str  # the sentence
    scale: str  # TUTORIAL_SCALE of the run
    measured: str  # the value as printed: "0.993", "70.9-73.4°", "true"
    expected: str  # the condition as printed: "≥ 0.99", "62-82°", "true"
    held: bool | None  # None: skipped at this scale


class Verdict(int):
    """Whether a claim held: true or false like a bool, and shown as nothing in a notebook.

    A claim often ends a cell. A plain bool there adds an ``Out[]`` line under the ✔ line,
    and a trailing ``;`` does not hide it under nbval, which runs cells without history.
    """

    def __repr__(self) -> str:
        return repr(bool(self))

    def _ipython_display_(self) -> None:
        pass


class ClaimFailed(AssertionError):
    """A claim that did not hold, raised when ``$COURSE_CLAIMS_STRICT`` is set (under the tests)."""


CLAIMS: list[Claim] = []
"""Every claim made in this Python process, in order."""


def claim(text: str, value: Any = True, *, within: tuple[float, float] | None = None,
          at_least: float | None = None, at_most: float | None = None, unit: str = "",
          label: str = "measured", scales: Sequence[str] | None = None) -> Verdict | None:
    """Check ``value`` against the bound(s), print one ✔/✘ line, record it; return whether it held.

    ``value`` is a bool (the claim is the bool), or numbers (python, numpy, torch on any
    device, or a sequence) checked against ``within=(lo, hi)``, ``at_least`` and/or
    ``at_most``; every element must satisfy the bound and NaN never does. ``unit`` follows
    each printed number, ``label`` names the measured value in the line. With ``scales``,
    the claim is checked only at those TUTORIAL_SCALE values; elsewhere it prints a skip
    line and returns None. A ``value`` that can only be computed at those scales (an entry a
    smaller run does not have) can be passed as a function of no arguments, e.g.
    ``lambda: pick[2000]``: it is called only where the claim is checked. The returned
    ``Verdict`` works as a bool and, as the last line of a cell, shows nothing.
    """
    scale = current_scale()
    text = " ".join(str(text).split())  # one line, whatever the sentence's line breaks
    if scales is not None:
        scales = (scales,) if isinstance(scales, str) else tuple(scales)
        unknown = [s for s in scales if s not in SCALES]
        if unknown or not scales:
            raise ValueError(f"claim(scales={scales!r}): name one or more of {', '.join(SCALES)}.")
    skipped = scales is not None and scale not in scales
    not_computed = skipped and callable(value)
    if not_computed:  # stands in for the value only to word the expectation; it is never checked
        value = True if within is None and at_least is None and at_most is None else 0.0
    elif callable(value):
        value = value()
    values = _as_array(value)
    lo, hi = _bounds(values.dtype == bool, type(value).__name__, within, at_least, at_most)
    expected = "true" if lo is None and hi is None else _condition(lo, hi, unit)

    measured = "not computed" if not_computed else _measured(values, unit)
    if skipped:
        held = None
        line = f"{SKIPPED} skipped at {scale}: {text} (checked at {', '.join(scales)})"
    else:
        held, outside = _check(values, lo, hi)
        if held:
            detail = "" if values.dtype == bool else f" ({label} {measured})"
            line = f"{HELD} {text}{detail}"
        else:
            shown = measured if not outside else f"{measured}, {outside} of {values.size} outside"
            line = f"{FAILED} {text} ({label} {shown}; expected {expected})"
    print(line)
    _record(Claim(_notebook(), text, scale, measured, expected, held))
    if held is False and os.environ.get("COURSE_CLAIMS_STRICT", "").strip() not in ("", "0"):
        raise ClaimFailed(line)
    return None if held is None else Verdict(held)


def claims_summary(claims: Sequence[Claim] | None = None) -> None:
    """Print a short table of the claims made so far (or of ``claims``): mark, measured, sentence."""
    claims = CLAIMS if claims is None else list(claims)
    held = sum(c.held is True for c in claims)
    failed = sum(c.held is False for c in claims)
    print(f"{len(claims)} claims: {held} held, {failed} failed, {len(claims) - held - failed} skipped")
    width = max((len(c.measured) for c in claims), default=0)
    for c in claims:
        mark = {True: HELD, False: FAILED, None: SKIPPED}[c.held]
        expected = f"  (expected {c.expected})" if c.held is False else ""
        print(f"  {mark} {c.measured:>{width}}  {c.claim}{expected}")


# --- values -------------------------------------------------------------------------------

def _as_array(value: Any) -> np.ndarray:
    """Any supported value as a flat float or bool numpy array (torch tensors leave their device)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        value = (value.double() if value.dtype.is_floating_point else value).numpy()  # bfloat16 has no numpy twin
    elif isinstance(value, (set, frozenset)):
        value = sorted(value)
    elif isinstance(value, (list, tuple)):
        value = [_as_array(v) for v in value]
        value = np.concatenate(value) if value else np.zeros(0)
    arr = np.asarray(value)
    if arr.dtype == bool:
        return arr.reshape(-1)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"claim: the value must be a bool or numbers (python, numpy, torch, or a sequence "
                        f"of them); got {type(value).__name__} of dtype {arr.dtype}.")
    return arr.astype(np.float64).reshape(-1)


def _bounds(is_bool: bool, kind: str, within, at_least, at_most) -> tuple[float | None, float | None]:
    """The lower and upper bound as floats (None: no bound); raises for bounds that make no sense."""
    if within is not None:
        if at_least is not None or at_most is not None:
            raise ValueError("claim: give either within=(lo, hi) or at_least/at_most, not both.")
        try:
            lo, hi = (float(b) for b in within)
        except (TypeError, ValueError):
            raise ValueError(f"claim(within={within!r}): within must be two numbers (lo, hi).") from None
        at_least, at_most = lo, hi
    for name, bound in (("at_least", at_least), ("at_most", at_most)):
        if bound is not None and (isinstance(bound, bool) or not math.isfinite(float(bound))):
            raise ValueError(f"claim({name}={bound!r}): a bound must be a finite number.")
    if at_least is not None and at_most is not None and float(at_least) > float(at_most):
        raise ValueError(f"claim: the lower bound {at_least} is above the upper bound {at_most}; "
                         "write within=(lo, hi) with lo <= hi.")
    if at_least is None and at_most is None:
        if not is_bool:
            raise ValueError(f"claim: a value of type {kind} needs a bound (within=, at_least= or "
                             "at_most=); only a bool is a claim by itself.")
    elif is_bool:
        raise ValueError("claim: a bool value is a claim by itself; drop within/at_least/at_most.")
    return (None if at_least is None else float(at_least)), (None if at_most is None else float(at_most))


def _condition(lo: float | None, hi: float | None, unit: str) -> str:
    """A bound as a claim line shows it: 62-82°, ≥ 0.99, ≤ 0.05."""
    if lo is not None and hi is not None:
        return _span(lo, hi, unit)
    return f"≥ {fmt(lo)}{unit}" if lo is not None else f"≤ {fmt(hi)}{unit}"


def _check(values: np.ndarray, lo: float | None, hi: float | None) -> tuple[bool, int]:
    """Whether every element satisfies the bound (NaN never does), and how many do not."""
    if values.size == 0:
        return False, 0  # an empty measurement proves nothing
    if values.dtype == bool:
        return bool(values.all()), 0
    nan = np.isnan(values)
    out = np.zeros_like(nan)
    if lo is not None:
        out |= values < lo
    if hi is not None:
        out |= values > hi
    held = not (nan.any() or out.any())
    return held, (int(out.sum()) if values.size > 1 else 0)  # NaN is counted by the measured part


def _measured(values: np.ndarray, unit: str) -> str:
    """A value as a claim line shows it: 0.993, 70.9-73.4°, true, 3 of 5 true, nothing."""
    if values.size == 0:
        return "nothing"
    if values.dtype == bool:
        if values.size == 1:
            return "true" if values[0] else "false"
        return f"{int(values.sum())} of {values.size} true"
    nan = np.isnan(values)
    if nan.all():
        return "nan" if values.size == 1 else f"{values.size} of {values.size} nan"
    span = _span(float(values[~nan].min()), float(values[~nan].max()), unit)
    return f"{span}, {int(nan.sum())} of {values.size} nan" if nan.any() else span


def _span(lo: float, hi: float, unit: str) -> str:
    a, b = fmt(lo), fmt(hi)
    if a == b:
        return f"{a}{unit}"
    return f"{a}-{b}{unit}" if lo >= 0 else f"{a}{unit} to {b}{unit}"


def fmt(x: float) -> str:
    """``x`` to three significant digits, without an exponent between 0.001 and a million."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e6:
        rounded = float(f"{x:.3g}")
        return f"{rounded:f}".rstrip("0").rstrip(".")
    return f"{x:.2e}"


# --- recording ----------------------------------------------------------------------------

def _notebook() -> str | None:
    """The running notebook's file name: set by the runner, or by the Jupyter front end."""
    name = os.environ.get("COURSE_NOTEBOOK")
    if name:
        return name
    try:
        from IPython import get_ipython

        ns = get_ipython().user_ns  # type: ignore[union-attr]
    except Exception:  # not in IPython
        return None
    path = ns.get("__vsc_ipynb_file__") or ns.get("__session__")
    return os.path.basename(path) if isinstance(path, str) and path.endswith(".ipynb") else None


def _record(c: Claim) -> None:
    CLAIMS.append(c)
    path = os.environ.get("COURSE_CLAIMS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(c._asdict(), ensure_ascii=False) + "\n")
