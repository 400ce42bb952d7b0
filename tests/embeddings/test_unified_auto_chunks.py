"""`--chunks auto`: K_f per feature from the training value counts, inside the budget, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from featmux.embeddings import Budget, EmbeddingSpec, Vocabulary, build_embedding, embedding_from_config
from featmux.embeddings.unified import auto_chunks, effective_values
from featmux.features import CategoricalFeature
from featmux.training.experiment import ExperimentConfig

DIM = 8
FEATURES = (
    CategoricalFeature("flat"),  # 2000 equally frequent values
    CategoricalFeature("skewed"),  # 2000 values, almost all traffic on a few
    CategoricalFeature("tiny"),  # 5 values
)


@pytest.fixture
def vocabulary():
    rng = np.random.default_rng(0)
    vocab = Vocabulary([f.name for f in FEATURES])
    vocab.update("flat", np.repeat(np.arange(2000), 3))
    vocab.update("skewed", np.concatenate([np.arange(2000), rng.zipf(3.0, 50_000) % 2000]))
    vocab.update("tiny", np.arange(5).repeat(100))
    return vocab


def spec(budget: str, **options) -> EmbeddingSpec:
    return EmbeddingSpec("unified", DIM, Budget.parse(budget), options={"default_chunks": "auto", **options})


def test_effective_values_is_the_perplexity_of_the_counts():
    assert effective_values(np.full(40, 7)) == pytest.approx(40)
    assert effective_values(np.array([1000, 1, 1, 1])) < 1.1
    assert effective_values(np.zeros(3, np.int64)) == 1.0


def test_the_rule_gives_more_chunks_to_many_even_values_than_to_small_or_skewed_ones():
    counts = {"flat": np.full(2000, 3), "skewed": np.array([10**6] + [1] * 1999), "tiny": np.full(5, 9)}
    assert auto_chunks(counts, 100) == {"flat": 3, "skewed": 1, "tiny": 1}
    assert auto_chunks(counts, 10_000)["flat"] == 2  # 1999 / 10^4 twins expected: over 0.1
    assert auto_chunks(counts, 100_000) == {"flat": 1, "skewed": 1, "tiny": 1}
    assert auto_chunks({"flat": np.full(10**7, 1)}, 2) == {"flat": 4}  # capped


@pytest.mark.parametrize("budget", ["1/4", "1/16", "1/64", "bytes:5000"])
def test_auto_chunks_stay_within_the_budget_and_are_deterministic(vocabulary, budget):
    layer = build_embedding(FEATURES, spec(budget), vocabulary)
    target = Budget.parse(budget).target(sum(vocabulary.cardinality(f.name) + 1 for f in FEATURES) * DIM, DIM)
    assert layer.serving_bytes() <= target.amount
    assert target.amount - layer.serving_bytes() < DIM * 4  # the shared rows use the budget to the row
    chunks = layer.config()["chunks"]
    assert set(chunks) == {"flat", "skewed", "tiny"}  # the choice is recorded per feature
    again = build_embedding(tuple(reversed(FEATURES)), spec(budget), vocabulary)
    assert again.config()["chunks"] == chunks
    assert chunks["tiny"] == 1 and chunks["skewed"] <= chunks["flat"]
    rebuilt = embedding_from_config(FEATURES, layer.config())
    assert rebuilt.config() == layer.config()


def test_at_a_small_budget_the_flat_feature_gets_more_chunks(vocabulary):
    chunks = build_embedding(FEATURES, spec("1/16"), vocabulary).config()["chunks"]
    assert chunks["flat"] >= 2 and chunks["skewed"] < chunks["flat"]


def test_listed_chunks_win_and_auto_needs_counts(vocabulary):
    layer = build_embedding(FEATURES, spec("1/16", chunks={"flat": 1}), vocabulary)
    assert layer.config()["chunks"]["flat"] == 1
    with pytest.raises(ValueError, match="need a vocabulary"):
        build_embedding(FEATURES, spec("bytes:4000"), None)
    with pytest.raises(ValueError, match="default_chunks must be >= 1 or 'auto'"):
        spec("1/4", default_chunks="most")


def test_the_cli_value_is_read_as_auto_or_a_number():
    auto = ExperimentConfig(embedding="unified", default_chunks="auto")
    assert auto.embedding_options["default_chunks"] == "auto"
    spec_two = ExperimentConfig(embedding="unified", default_chunks="2").embedding_spec()
    assert spec_two.options.default_chunks == 2
