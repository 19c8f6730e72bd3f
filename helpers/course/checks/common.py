"""What the exercise checks share: reading the reader's answer, comparing it with the reference's,
and naming the likely mistake from a table of wrong answers.

A table of mistakes is a list of ``(wrong, message)``: ``wrong`` is what a solution with that
mistake returns on the case at hand (None where the mistake says nothing about it), ``message``
what the reader whose answer equals it is told. ``reject`` runs one table against an answer.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from helpers.course.exercises import expect

Mistakes = Iterable[tuple[object, str]]
"""(what a solution with the mistake returns, the message that names the mistake), in the order to try."""


def shape_of(x) -> str:
    """``x``'s shape as a tuple, or its type's name where it has none: for the messages."""
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


def same(a, b, tol: float = 1e-5) -> bool:
    """Whether ``a`` is a tensor of ``b``'s shape with ``b``'s values, up to ``tol``."""
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.detach().float(), b.detach().float(), rtol=tol, atol=tol)))


def near(tol: float) -> Callable[[float, float], bool]:
    """A comparison of two numbers for ``reject``: equal up to ``tol`` (NaN equals everything, so
    that an answer of NaN is told the first mistake rather than passed by)."""
    return lambda a, b: not abs(a - b) > tol


def reject(got, mistakes: Mistakes, equal: Callable[[object, object], bool] = same, otherwise: str | None = None) -> None:
    """Fail with the message of the first mistake whose wrong answer ``got`` equals (by ``equal``);
    failing that, with ``otherwise`` (what the right answer is) where it is given."""
    for wrong, message in mistakes:
        expect(wrong is None or not equal(got, wrong), message)
    expect(otherwise is None, otherwise)


def expect_same_gradients(got: torch.Tensor, want: torch.Tensor, inputs: dict[str, torch.Tensor], no_graph: str,
                          wrong: Callable[[str], str], weights: torch.Tensor | None = None, rtol: float = 1e-5,
                          atol: float = 1e-5) -> None:
    """Right values: a function that is trained through must also carry the reference's gradient.
    ``want`` is the reference's output on the same ``inputs`` (leaves, by name); ``weights`` weigh
    the outputs before they are summed (a different weight per instance shows a mix-up). Fails with
    ``no_graph`` when ``got`` has no graph, with ``wrong(name)`` at the first input whose gradient differs."""
    expect(isinstance(got, torch.Tensor) and got.requires_grad and got.grad_fn is not None, no_graph)
    w = 1 if weights is None else weights
    mine = torch.autograd.grad((got * w).sum(), list(inputs.values()), allow_unused=True, retain_graph=True)
    ref = torch.autograd.grad((want * w).sum(), list(inputs.values()), retain_graph=True)
    for name, m, r in zip(inputs, mine, ref):
        expect(m is not None and torch.allclose(m, r, rtol=rtol, atol=atol), wrong(name))


def as_tensor(got, shape: tuple, what: str) -> torch.Tensor:
    """The reader's ``got`` as a float tensor of ``shape``, or a failure that says what to return."""
    try:
        t = got.detach().float() if isinstance(got, torch.Tensor) else torch.as_tensor(np.asarray(got, dtype=float)).float()
    except (TypeError, ValueError, RuntimeError):
        t = None
    expect(t is not None and tuple(t.shape) == tuple(shape),
           f"return {what}, a tensor of shape {tuple(shape)}; got {type(got).__name__} {shape_of(got)}")
    return t


def as_float(got, what: str) -> float:
    """The reader's ``got`` as one number, or a failure that says what to return."""
    try:
        return float(got)
    except (TypeError, ValueError, RuntimeError):
        expect(False, f"return {what} (a float or a one-element tensor); got {type(got).__name__} {shape_of(got)}")


def unit_rows(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Random rows of length 1 (along the last axis), drawn from ``g``."""
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def expect_reproducible(draw: Callable[[], torch.Tensor], message: str) -> torch.Tensor:
    """Fail with ``message`` unless two calls of ``draw`` (each seeding its own generator) agree
    and leave the global random state as it was (it is put back either way). Returns the draw."""
    state = torch.get_rng_state()
    one, two = draw(), draw()
    moved = not torch.equal(state, torch.get_rng_state())
    torch.set_rng_state(state)
    expect(torch.equal(one, two) and not moved, message)
    return one
