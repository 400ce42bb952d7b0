"""Seeded Lloyd k-means in torch, vectorized over points (used by CCE's re-clustering).

Squared Euclidean distances are formed as ||x||^2 - 2 x.c + ||c||^2 in chunks of points, so memory
stays bounded for large vocabularies; a loop runs over chunks and iterations, never over points.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_CHUNK_ELEMENTS = 1 << 22  # points x clusters per distance block: 16 MiB of float32


class KMeansResult(NamedTuple):
    """A k-means clustering.

    Args:
        centroids: float [k, d].
        assignments: int64 [n], each point's nearest centroid.
        losses: the k-means loss (sum of squared distances to the assigned centroid) at the seeded
            initial centroids, then after each Lloyd iteration; it never increases.
    """

    centroids: torch.Tensor
    assignments: torch.Tensor
    losses: list[float]


def nearest(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [n] of each point's nearest centroid, its squared distance [n]), computed in chunks."""
    k = centroids.shape[0]
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    c_norm = centroids.pow(2).sum(1)  # [k]
    index, dist = [], []
    for start in range(0, points.shape[0], step):
        x = points[start : start + step]  # [m, d]
        d2 = x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.t() + c_norm  # [m, k]
        best, arg = d2.min(1)
        index.append(arg)
        dist.append(best.clamp_(min=0))
    return torch.cat(index), torch.cat(dist)


def kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> KMeansResult:
    """Lloyd's k-means from k distinct points drawn with `generator` (deterministic given its seed).

    An empty cluster keeps its previous centroid, so the loss is non-increasing.

    Args:
        points: float [n, d].
        k: clusters, 1 <= k <= n.
        iterations: Lloyd iterations (assign, then move each centroid to its points' mean).
        generator: a seeded CPU generator for the initial centroids.
    """
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n points, got k={k}, n={n}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    x = points.detach().float()
    pick = torch.randperm(n, generator=generator)[:k].to(x.device)
    centroids = x[pick].clone()  # [k, d]
    assign, dist = nearest(x, centroids)
    losses = [float(dist.sum())]
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # [k, d]
        counts = torch.bincount(assign, minlength=k)  # [k]
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(x.dtype)
        assign, dist = nearest(x, centroids)
        losses.append(float(dist.sum()))
    return KMeansResult(centroids.to(points.dtype), assign, losses)
