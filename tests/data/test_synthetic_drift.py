"""Concept drift in the synthetic stream: deterministic, chunk-invariant, calibrated, and real drift."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from featmux.data.synthetic import BLOCK_ROWS, SyntheticConfig, iter_synthetic, planted_logits

DRIFT = 20_000
CONFIG = SyntheticConfig(cardinalities=(20, 200, 2_000), seed=4, drift_rows=DRIFT)


def collect(config: SyntheticConfig, rows: int, chunk_rows: int = 262_144, start: int = 0) -> pl.DataFrame:
    return pl.concat(list(iter_synthetic(config, rows, chunk_rows, start_row=start)))


def test_no_drift_is_the_default_stream():
    plain = SyntheticConfig(cardinalities=CONFIG.cardinalities, seed=4)
    assert collect(plain, 3_000).equals(
        collect(SyntheticConfig(**{**plain.__dict__, "drift_rows": 0}), 3_000)
    )


def test_drift_changes_labels_not_ids():
    plain = collect(SyntheticConfig(cardinalities=CONFIG.cardinalities, seed=4), 5_000)
    drifted = collect(CONFIG, 5_000)
    assert drifted.drop("label").equals(plain.drop("label"))
    assert not drifted["label"].equals(plain["label"])


def test_deterministic_and_chunk_invariant_across_segments():
    start = BLOCK_ROWS - 1_000  # the window crosses a block boundary and drift segment 3 -> 4
    reference = collect(CONFIG, 3_000, start=start)
    assert reference.equals(collect(CONFIG, 3_000, start=start))
    pieces = collect(CONFIG, 3_000, chunk_rows=333, start=start)
    assert pieces.equals(reference)
    assert collect(CONFIG, 1_000, start=start + 1_500).equals(reference.slice(1_500, 1_000))


def test_ctr_stays_calibrated_and_old_models_go_stale():
    late_start = 3 * DRIFT
    late = collect(CONFIG, 20_000, start=late_start)
    labels = late["label"].to_numpy()
    assert abs(labels.mean() - CONFIG.base_ctr) < 0.02
    current = roc_auc_score(labels, planted_logits(CONFIG, late, start_row=late_start))
    stale = roc_auc_score(labels, planted_logits(CONFIG, late, start_row=0))  # the model of row 0
    assert current > 0.7
    assert abs(stale - 0.5) < 0.05  # segments 2 * drift_rows apart are independent


def test_drift_rows_validated():
    with pytest.raises(ValueError, match="drift_rows"):
        SyntheticConfig(drift_rows=-1)


def test_effects_are_continuous_at_segment_boundaries():
    # the last row of a segment and the first of the next share (almost) the same planted model
    boundary = 2 * DRIFT
    frame = collect(CONFIG, 1, start=boundary)
    before = planted_logits(CONFIG, frame, start_row=boundary - 1)
    after = planted_logits(CONFIG, frame, start_row=boundary)
    assert np.allclose(before, after, atol=0.01)
