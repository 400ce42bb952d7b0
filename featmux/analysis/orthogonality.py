"""The Unified Embedding paper's diagnostic: are features' first-layer subspaces nearly orthogonal?

The first dense layer W [out, in] reads the flattened slots x = [e_1, ..., e_S, dense] (S slots of D
columns each, then the numeric features). Feature f owns the columns of its slots (K_f x D of them);
W_f = W[:, cols_f] maps f's embedding into R^out through the column space of W_f. Coleman et al.
(2023, sec. 4) argue that training makes these subspaces nearly orthogonal for different features, so
that cross-feature collisions in a shared table cost little: the same row, read by two features, lands
in nearly orthogonal directions of the next layer.

For two features with orthonormal bases Q_f, Q_g of their blocks' column spaces (numerical rank, from an
SVD), the principal angles are theta_i = arccos(sigma_i(Q_f^T Q_g)). The score is the mean of
cos^2(theta_i) over the min(r_f, r_g) angles: 0 for orthogonal subspaces, 1 when one contains the other.
For reference, two uniformly random subspaces of R^out score max(r_f, r_g) / out on average (since
E ||Q_f^T Q_g||_F^2 = r_f r_g / out), which the report gives as the baseline.

Example:
    >>> report = checkpoint_orthogonality("runs/frappe/model.pt")   # first layer reading the slots
    >>> report.mean_score, report.mean_baseline
    >>> report.pairs()[:3]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, unique
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featmux.models.base import CTRModel
from featmux.models.dcnv2 import DCNStructure

DEFAULT_RANK_TOL = 1e-6  # singular values below this times the largest one count as zero (float32 noise)


@unique
class FirstLayer(Enum):
    """Which dense layer of a model to analyse."""

    AUTO = "auto"  # the MLP's first layer if it reads the flattened slots, else the first cross layer
    MLP = "mlp"  # model.mlp[0], where it reads the slots (not in a stacked DCN-v2)
    CROSS = "cross"  # model.cross.layers[0] (its first projection when low-rank)


def _mlp_reads_slots(model: CTRModel) -> bool:
    """Whether `model.mlp` is fed the flattened slots: not in a stacked DCN-v2, whose MLP reads the cross
    network's output (as wide as the slots, so the widths alone cannot tell)."""
    return getattr(getattr(model, "config", None), "structure", None) is not DCNStructure.STACKED


def feature_columns(slot_names: Sequence[str], embedding_dim: int) -> dict[str, np.ndarray]:
    """Columns of the flattened embeddings owned by each feature: slot s covers [s D, (s + 1) D).

    Args:
        slot_names: the layer's `slot_names` (`feature#chunk`, in output order).
        embedding_dim: D.

    Example:
        >>> feature_columns(("a#0", "a#1", "b#0"), 2)
        {'a': array([0, 1, 2, 3]), 'b': array([4, 5])}
    """
    out: dict[str, list[int]] = {}
    for s, slot in enumerate(slot_names):
        out.setdefault(slot.rsplit("#", 1)[0], []).extend(range(s * embedding_dim, (s + 1) * embedding_dim))
    return {name: np.asarray(cols, dtype=np.int64) for name, cols in out.items()}


def first_dense_weight(model: CTRModel, layer: FirstLayer = FirstLayer.AUTO) -> torch.Tensor:
    """W [out, in] of the first dense layer fed by the flattened slots (and numeric features).

    Args:
        model: a CTR model whose deep part reads `flat_input` (DCN-v2, DeepFM).
        layer: which layer (see `FirstLayer`); AUTO takes the first MLP layer where it reads the slots,
            else the first cross layer (so in a stacked DCN-v2, the cross layer).

    Raises:
        ValueError: the model has no such layer reading S x D + N inputs (e.g. DLRM, FM, LR), or the
            layer asked for does not read the slots (`mlp` in a stacked DCN-v2).
    """
    layer = FirstLayer(layer)
    width = model.embedding.output_dim + model.num_dense
    candidates: list[tuple[FirstLayer, Any]] = []
    mlp = getattr(model, "mlp", None)
    if mlp is not None and len(mlp) and isinstance(mlp[0], nn.Linear):
        if _mlp_reads_slots(model):
            candidates.append((FirstLayer.MLP, mlp[0]))
        elif layer is FirstLayer.MLP:
            raise ValueError(
                f"the MLP of this stacked {type(model).__name__} reads the cross network's output, not the "
                "embedding slots: its first layer says nothing about the features' subspaces; use the "
                "cross layer (--layer cross, or auto)"
            )
    cross = getattr(model, "cross", None)
    if cross is not None:
        first = cross.layers[0]
        candidates.append((FirstLayer.CROSS, first if isinstance(first, nn.Linear) else first[0]))
    for kind, linear in candidates:
        if layer in (FirstLayer.AUTO, kind) and linear.in_features == width:
            return linear.weight.detach()
    raise ValueError(
        f"{type(model).__name__} has no {layer.value} layer reading the {width} flattened inputs "
        "(the diagnostic needs a dense layer over the slots: DCN-v2 or DeepFM)"
    )


def _basis(block: np.ndarray, rank_tol: float) -> np.ndarray:
    """Orthonormal basis [out, r] of the column space of `block` (numerical rank r)."""
    u, s, _ = np.linalg.svd(block, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return u[:, :0]
    return u[:, : int(np.count_nonzero(s > rank_tol * s[0]))]


def principal_angles(a: np.ndarray, b: np.ndarray, rank_tol: float = DEFAULT_RANK_TOL) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of a [n, p] and b [n, q].

    Example:
        >>> principal_angles(np.eye(3)[:, :1], np.eye(3)[:, 1:2])
        array([1.57079633])
    """
    return _angles(_basis(np.asarray(a, np.float64), rank_tol), _basis(np.asarray(b, np.float64), rank_tol))


def _angles(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return np.zeros(0)
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)  # descending
    return np.arccos(cosines)


@dataclass(frozen=True)
class OrthogonalityReport:
    """Pairwise subspace overlap of features' first-layer blocks.

    Args:
        features: feature names, in slot order.
        ranks: numerical rank r_f of each block.
        out_dim: rows of W.
        scores: [F, F] mean cos^2 of the principal angles (diagonal 1).
        baseline: [F, F] expected score of random subspaces of the same ranks, max(r_f, r_g) / out.
        angles: (f, g) -> principal angles in degrees, ascending, for f before g.
    """

    features: tuple[str, ...]
    ranks: tuple[int, ...]
    out_dim: int
    scores: np.ndarray
    baseline: np.ndarray
    angles: dict[tuple[str, str], np.ndarray]

    def _upper(self, matrix: np.ndarray) -> np.ndarray:
        i, j = np.triu_indices(len(self.features), k=1)
        return matrix[i, j]

    @property
    def mean_score(self) -> float:
        """Mean score over feature pairs (0: all pairwise orthogonal)."""
        upper = self._upper(self.scores)
        return float(upper.mean()) if upper.size else 0.0

    @property
    def mean_baseline(self) -> float:
        """Mean random-subspace score over the same pairs."""
        upper = self._upper(self.baseline)
        return float(upper.mean()) if upper.size else 0.0

    def pairs(self) -> list[dict[str, Any]]:
        """One dict per feature pair, most overlapping first."""
        rows = []
        for (f, g), deg in self.angles.items():
            i, j = self.features.index(f), self.features.index(g)
            rows.append(
                {
                    "feature": f,
                    "other": g,
                    "score": float(self.scores[i, j]),
                    "baseline": float(self.baseline[i, j]),
                    "min_angle_deg": float(deg[0]) if deg.size else float("nan"),
                    "mean_angle_deg": float(deg.mean()) if deg.size else float("nan"),
                }
            )
        return sorted(rows, key=lambda r: -r["score"])

    def feature_rows(self) -> list[dict[str, Any]]:
        """Per feature: its rank and its mean score / baseline against the others."""
        n = len(self.features)
        off = ~np.eye(n, dtype=bool)
        return [
            {
                "feature": f,
                "rank": self.ranks[i],
                "mean_score": float(self.scores[i][off[i]].mean()) if n > 1 else 0.0,
                "mean_baseline": float(self.baseline[i][off[i]].mean()) if n > 1 else 0.0,
            }
            for i, f in enumerate(self.features)
        ]


def orthogonality(
    weight: torch.Tensor | np.ndarray,
    columns: Mapping[str, np.ndarray],
    rank_tol: float = DEFAULT_RANK_TOL,
) -> OrthogonalityReport:
    """Principal angles and scores between the column spaces of W's feature blocks.

    Args:
        weight: W [out, in].
        columns: feature -> its column indices in W (e.g. `feature_columns`).
        rank_tol: relative singular-value threshold for the numerical rank.

    Example:
        >>> w = np.eye(4)                                 # two features in orthogonal directions
        >>> orthogonality(w, {"a": np.array([0, 1]), "b": np.array([2, 3])}).mean_score  # ~0 (float noise)
    """
    w = (
        weight.detach().cpu().double().numpy()
        if isinstance(weight, torch.Tensor)
        else np.asarray(weight, float)
    )
    names = tuple(columns)
    bases = [_basis(w[:, np.asarray(columns[n])], rank_tol) for n in names]
    ranks = tuple(q.shape[1] for q in bases)
    out_dim = w.shape[0]
    n = len(names)
    scores, baseline = np.eye(n), np.eye(n)
    angles: dict[tuple[str, str], np.ndarray] = {}
    for i in range(n):
        for j in range(i + 1, n):
            theta = _angles(bases[i], bases[j])
            score = float(np.mean(np.cos(theta) ** 2)) if theta.size else 0.0
            scores[i, j] = scores[j, i] = score
            if min(ranks[i], ranks[j]) > 0:
                baseline[i, j] = baseline[j, i] = min(1.0, max(ranks[i], ranks[j]) / out_dim)
            else:
                baseline[i, j] = baseline[j, i] = 0.0
            angles[(names[i], names[j])] = np.degrees(theta)
    return OrthogonalityReport(names, ranks, out_dim, scores, baseline, angles)


def model_orthogonality(
    model: CTRModel, layer: FirstLayer = FirstLayer.AUTO, rank_tol: float = DEFAULT_RANK_TOL
) -> OrthogonalityReport:
    """The diagnostic on a model's first dense layer, one block per categorical feature.

    Args:
        model: a trained DCN-v2 or DeepFM.
        layer: which first layer (see `FirstLayer`).
        rank_tol: relative singular-value threshold for the numerical rank.
    """
    weight = first_dense_weight(model, layer)
    emb = model.embedding
    return orthogonality(weight, feature_columns(emb.slot_names, emb.embedding_dim), rank_tol)


def checkpoint_orthogonality(
    path: str | Path, layer: FirstLayer = FirstLayer.AUTO, rank_tol: float = DEFAULT_RANK_TOL
) -> OrthogonalityReport:
    """The diagnostic on a model saved by featmux (`featmux.training.checkpoint.load_model`)."""
    from featmux.training.checkpoint import load_model

    model, _ = load_model(path)
    return model_orthogonality(model, layer, rank_tol)
