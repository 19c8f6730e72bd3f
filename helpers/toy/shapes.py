"""Which polytope each feature of a trained W belongs to, read from its tegum factor.

A tegum factor is a group of represented features linked by |W_i . W_j| > threshold (notebook 01,
exercise 6). A factor of k features spanning d dimensions, each with feature dimensionality d / k,
is one of the paper's uniform polytopes when (k, d) is in ``SHAPES``; anything else is "other".
A feature's dimensionality alone can land on a fraction (say 3/4) without the shape behind it.
"""
from __future__ import annotations

import numpy as np
import torch

SHAPES = {(1, 1): "own dimension", (2, 1): "digon", (3, 2): "triangle", (4, 3): "tetrahedron",
          (5, 2): "pentagon", (8, 3): "square antiprism"}
"""(features, dimensions) of a tegum factor -> the uniform polytope it is."""


def factors(W: torch.Tensor, threshold: float = 0.2) -> list[list[int]]:
    """Connected components of |W^T W| > threshold among the features of W (m, n) with norm > 0.5."""
    keep = (W.norm(dim=0) > 0.5).numpy()
    linked = ((W.T @ W).abs() > threshold).numpy() & keep[:, None] & keep[None, :]
    label = -np.ones(W.shape[1], dtype=int)
    for start in np.nonzero(keep)[0]:
        if label[start] < 0:
            label[start], stack = start, [start]
            while stack:
                i = stack.pop()
                for j in np.nonzero(linked[i] & (label < 0))[0]:
                    label[j] = start
                    stack.append(j)
    return [np.nonzero(label == s)[0].tolist() for s in np.unique(label[label >= 0])]


def feature_shapes(W: torch.Tensor, feature_dim, threshold: float = 0.2, tol: float = 0.03) -> list[str]:
    """Per feature of W (m, n): the shape of its tegum factor ("" for a dropped feature). ``feature_dim`` (n,)
    are the features' dimensionalities; a factor counts as a polytope only if each is within tol of d / k."""
    out = [""] * W.shape[1]
    for f in factors(W, threshold):
        s = torch.linalg.svdvals(W[:, f])
        k, d = len(f), int((s > 0.1 * s.max()).sum())
        regular = bool(np.all(np.abs(np.asarray(feature_dim)[f] - d / k) < tol))
        for i in f:
            out[i] = SHAPES.get((k, d), "other") if regular else "other"
    return out


def shape_census(W: torch.Tensor, feature_dim) -> list[dict[str, int]]:
    """For each model of W (models, m, n): how many features sit in each shape."""
    census = []
    for Wk, dk in zip(W, feature_dim):
        names = [s for s in feature_shapes(Wk, dk) if s]
        census.append({s: names.count(s) for s in dict.fromkeys(names)})
    return census
