"""Binary classification metrics: AUC and logloss (scikit-learn's, the reference implementations)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


@dataclass(frozen=True)
class Metrics:
    """AUC and logloss of predictions on a split."""

    auc: float
    logloss: float
    rows: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}auc": self.auc, f"{prefix}logloss": self.logloss, f"{prefix}rows": self.rows}


def binary_metrics(labels: np.ndarray, logits: np.ndarray) -> Metrics:
    """AUC and logloss from labels {0, 1} and logits. AUC is NaN when only one class is present.

    AUC is computed on the logits themselves (it depends only on their order): probabilities clipped
    for the logloss would tie every very confident score. Only the logloss clips.
    """
    labels = np.asarray(labels, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    both = 0 < labels.sum() < labels.size
    auc = float(roc_auc_score(labels, logits)) if both else float("nan")
    probs = np.clip(1.0 / (1.0 + np.exp(-logits)), 1e-7, 1 - 1e-7)
    loss = float(log_loss(labels, probs, labels=[0.0, 1.0])) if labels.size else float("nan")
    return Metrics(auc, loss, int(labels.size))
