"""Where a ReLU toy model's loss comes from, with the bias kept apart from interference.

``toy.loss_split`` sorts each feature's error by how many *other* features are on. When a feature
is off, its output is ReLU(sum_j G_ij x_j + b_i): a positive bias b_i is paid on every sample where
the feature is off, however many others are on. ``loss_parts`` books that part, I_i ReLU(b_i)^2, on
its own, and keeps as *interference* only what the other features add to it (or take from it: a
negative value means they pushed the output towards the right answer 0).
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class LossParts(NamedTuple):
    """Importance-weighted squared error per sample of a ReLU toy model, each (inst,); they add up to the loss."""

    own: torch.Tensor  # feature on: its own error
    bias: torch.Tensor  # feature off: ReLU(b_i)^2, what the output would be with nothing else on
    one_other: torch.Tensor  # feature off, exactly one other on: what that feature adds to the error
    several_others: torch.Tensor  # feature off, 2+ others on: what they add to the error


def loss_parts(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> LossParts:
    """Split the loss on x (inst, batch, n) into own error, bias and interference; W (inst, m, n), b and importance (inst, n)."""
    x_hat = torch.relu(torch.einsum("imn,imk,ibk->ibn", W, W, x) + b[:, None])  # (inst, batch, n)
    err = importance[:, None] * (x - x_hat) ** 2  # (inst, batch, n)
    bias = (importance * torch.relu(b) ** 2)[:, None].expand_as(err)  # the error of an off feature with nothing on
    on = x > 0
    others = on.sum(-1, keepdim=True) - on.int()  # (inst, batch, n): active features other than i
    total = lambda e, mask: (e * mask).sum(-1).mean(-1)
    return LossParts(total(err, on), total(bias, ~on), total(err - bias, ~on & (others == 1)),
                     total(err - bias, ~on & (others >= 2)))
