"""The synthetic CTR stream: determinism, chunk invariance, realism and a learnable planted model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from featmux.data.synthetic import (
    BLOCK_ROWS,
    SyntheticConfig,
    iter_synthetic,
    planted_logits,
    synthetic_schema,
)
from featmux.features import ValueEncoding

SMALL = SyntheticConfig(cardinalities=(5, 50, 500, 5_000), num_numeric=2, seed=11)


def collect(config: SyntheticConfig, rows: int, chunk_rows: int = 262_144, start: int = 0) -> pl.DataFrame:
    return pl.concat(list(iter_synthetic(config, rows, chunk_rows, start_row=start)))


def test_schema_and_columns(encode_all):
    schema = synthetic_schema(SMALL)
    assert schema.feature_names == ("C1", "C2", "C3", "C4")
    assert all(f.encoding is ValueEncoding.INT for f in schema.categorical)
    frame = collect(SMALL, 1_000)
    assert frame.columns == ["label", "C1", "C2", "C3", "C4", "I1", "I2"]
    assert (
        frame.schema["label"] == pl.Int8
        and frame.schema["C1"] == pl.Int64
        and frame.schema["I1"] == pl.Float64
    )
    assert len(encode_all([frame], schema)) == 1_000


def test_deterministic_and_seed_dependent():
    assert collect(SMALL, 2_000).equals(collect(SMALL, 2_000))
    other = SyntheticConfig(cardinalities=SMALL.cardinalities, num_numeric=2, seed=12)
    assert not collect(SMALL, 2_000).equals(collect(other, 2_000))


def test_chunk_size_and_start_row_invariance():
    # crosses a block boundary
    reference = collect(SMALL, BLOCK_ROWS + 500)
    chunks = list(iter_synthetic(SMALL, BLOCK_ROWS + 500, chunk_rows=7_777))
    assert [c.height for c in chunks[:-1]] == [7_777] * (len(chunks) - 1)
    assert pl.concat(chunks).equals(reference)
    window = collect(SMALL, 700, chunk_rows=7, start=BLOCK_ROWS - 300)
    assert window.equals(reference.slice(BLOCK_ROWS - 300, 700))


def test_values_follow_cardinalities_and_zipf():
    frame = collect(SMALL, 50_000)
    for name, cardinality in zip(("C1", "C2", "C3", "C4"), SMALL.cardinalities, strict=True):
        column = frame[name]
        assert column.min() >= 0 and column.max() < cardinality
    counts = frame["C4"].value_counts(sort=True)["count"].to_numpy()
    assert counts[0] > 20 * counts[50]  # a heavy head, a long tail
    assert 0.05 < frame["I1"].null_count() / frame.height < 0.15


def test_base_ctr_and_planted_auc():
    config = SyntheticConfig(seed=3)  # the default Criteo-like mix
    frame = collect(config, 60_000)
    labels = frame["label"].to_numpy()
    assert abs(labels.mean() - config.base_ctr) < 0.01
    logits = planted_logits(config, frame)
    assert 0.74 < roc_auc_score(labels, logits) < 0.82  # the Bayes AUC


def test_logistic_regression_learns_something_but_not_everything():
    config = SyntheticConfig(cardinalities=(10, 30, 100, 300, 1_000), seed=5)
    frame = collect(config, 60_000)
    x = frame.select(config.feature_names).to_numpy()
    y = frame["label"].to_numpy()
    encoder = OneHotEncoder(handle_unknown="ignore").fit(x[:50_000])
    model = LogisticRegression(max_iter=200).fit(encoder.transform(x[:50_000]), y[:50_000])
    auc = roc_auc_score(y[50_000:], model.predict_proba(encoder.transform(x[50_000:]))[:, 1])
    bayes = roc_auc_score(y[50_000:], planted_logits(config, frame.slice(50_000)))
    assert 0.6 < auc < bayes  # first-order effects are learnable; interactions need an FM/DCN


def test_large_cardinalities_need_no_tables():
    config = SyntheticConfig(cardinalities=(10,) * 3 + (10_000_000,) * 23, num_numeric=13, seed=1)
    frame = collect(config, 2_000, start=5_000_000)
    assert frame.width == 1 + 26 + 13
    assert frame["C26"].max() < 10_000_000 and frame["C26"].n_unique() > 500


def test_churn_introduces_new_ids_over_time():
    config = SyntheticConfig(cardinalities=(100, 1_000), seed=2, churn_rows=5_000, churn_period=4)
    early = collect(config, 5_000)
    late = collect(config, 5_000, start=20_000)
    assert early["C2"].max() < 1_000 and late["C2"].max() >= 1_000
    still = collect(SyntheticConfig(cardinalities=(100, 1_000), seed=2), 5_000, start=20_000)
    assert still["C2"].max() < 1_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cardinalities": ()},
        {"cardinalities": (0, 5)},
        {"base_ctr": 1.0},
        {"zipf_exponent": 0.0},
        {"latent_dim": 0},
        {"seed": -1},
        {"numeric_missing": 1.0},
        {"interaction_std": -1.0},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)


def test_bad_arguments():
    with pytest.raises(ValueError):
        list(iter_synthetic(SMALL, -1))
    with pytest.raises(ValueError):
        list(iter_synthetic(SMALL, 10, chunk_rows=0))
    assert list(iter_synthetic(SMALL, 0)) == []
    assert np.isfinite(planted_logits(SMALL, collect(SMALL, 10))).all()
