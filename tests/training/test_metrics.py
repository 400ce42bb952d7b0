"""AUC and logloss of logits."""

from __future__ import annotations

import numpy as np

from featmux.training.metrics import binary_metrics


def test_auc_orders_very_confident_scores_that_clipping_would_tie():
    # every probability rounds to within 1e-7 of 1: clipped, all four would tie at AUC 0.5
    labels = np.array([0.0, 1.0, 0.0, 1.0])
    logits = np.array([20.0, 21.0, 22.0, 23.0])
    m = binary_metrics(labels, logits)
    assert m.auc == 0.75  # positives at ranks 2 and 4 of 4: (1 + 2) / 4 pairs
    assert np.isfinite(m.logloss)
    # the logloss still clips: the confident negatives cost -log(1e-7) each, not infinity
    assert abs(m.logloss - (2 * -np.log(1e-7)) / 4) < 1e-3


def test_one_class_gives_nan_auc():
    assert np.isnan(binary_metrics(np.ones(3), np.zeros(3)).auc)
