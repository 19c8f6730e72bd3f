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


def tegum_factors(W: torch.Tensor, threshold: float = 0.1, min_norm: float = 0.5) -> list[list[int]]:
    """The tegum factors of one W (m, n): groups of represented features (||W_i|| > min_norm) linked,
    directly or through others, by |W_i . W_j| > threshold. Sorted lists, biggest group first (ties:
    by first feature); features not represented are in no group. (Notebook 01's exercise 7.)"""
    keep = (W.norm(dim=0) > min_norm).tolist()
    linked = ((W.mT @ W).abs() > threshold).tolist()
    n, seen, groups = W.shape[1], set(), []
    for start in range(n):
        if not keep[start] or start in seen:
            continue
        group, stack = [], [start]  # depth-first search: everything reachable from `start`
        seen.add(start)
        while stack:
            i = stack.pop()
            group.append(i)
            for j in range(n):
                if keep[j] and linked[i][j] and j not in seen:
                    seen.add(j)
                    stack.append(j)
        groups.append(sorted(group))
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def feature_shapes(W: torch.Tensor, feature_dim, threshold: float = 0.2, tol: float = 0.03) -> list[str]:
    """Per feature of W (m, n): the shape of its tegum factor ("" for a dropped feature). ``feature_dim`` (n,)
    are the features' dimensionalities; a factor counts as a polytope only if each is within tol of d / k."""
    out = [""] * W.shape[1]
    for f in tegum_factors(W, threshold):
        s = torch.linalg.svdvals(W[:, f])
        k, d = len(f), int((s > 0.1 * s.max()).sum())
        regular = bool(np.all(np.abs(np.asarray(feature_dim)[f] - d / k) < tol))
        for i in f:
            out[i] = SHAPES.get((k, d), "other") if regular else "other"
    return out
