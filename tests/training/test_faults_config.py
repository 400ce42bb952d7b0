"""Invalid configuration is rejected up front, before any data is read, saying what to change."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from featmux.embeddings import Budget, EmbeddingSpec, Vocabulary, build_embedding
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.training.experiment import ExperimentConfig, run_experiment

FEATURES = [CategoricalFeature(name, ValueEncoding.INT) for name in ("user", "item")]


def vocabulary() -> Vocabulary:
    vocab = Vocabulary(["user", "item"])
    vocab.update("user", np.arange(100))
    vocab.update("item", np.arange(50))
    return vocab


@pytest.mark.parametrize("budget", ["-1/4", "0", "rows:-5", "params:0", "a quarter"])
def test_bad_budgets_say_what_to_write(budget):
    with pytest.raises(
        ValidationError, match=r"cannot read budget .*use a fraction .* or bytes:N, rows:N, or params:N"
    ):
        ExperimentConfig(budget=budget)


def test_hashing_budget_above_the_collisionless_size_is_rejected():
    with pytest.raises(ValidationError, match=r"larger than the collisionless size.*at most 1"):
        ExperimentConfig(embedding="hashing", budget="4")
    ExperimentConfig(embedding="unified", budget="16")  # a legitimate collision study


def test_budget_above_the_vocabulary_warns_when_building():
    for method, text in (
        ("hashing", "excess is not used"),
        ("unified", "collision"),
    ):
        with pytest.warns(UserWarning, match=rf"above the collisionless size .*{text}"):
            build_embedding(FEATURES, EmbeddingSpec(method, 4, Budget(rows=1_000)), vocabulary())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_embedding(FEATURES, EmbeddingSpec("unified", 4, Budget(fraction=1.0)), vocabulary())


def test_unknown_feature_names_list_the_valid_ones():
    spec = EmbeddingSpec("unified", 4, Budget(rows=100), options={"chunks": {"usr": 2}})
    with pytest.raises(
        ValueError, match=r"unknown feature\(s\) \['usr'\]; the features are \['user', 'item'\]"
    ):
        build_embedding(FEATURES, spec, None)


def test_unknown_names_fail_before_any_data_is_encoded(tmp_path):
    base = {"dataset_options": {"rows": 2_000}, "cache_dir": tmp_path / "cache", "progress": False}
    with pytest.raises(ValueError, match=r"the features are \['C1', 'C2'"):
        run_experiment(ExperimentConfig(**base, chunks={"C99": 2}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['row'\]; valid options are"):
        run_experiment(ExperimentConfig(**{**base, "dataset_options": {"row": 5}}))
    assert not (tmp_path / "cache").exists()  # nothing was encoded


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model_options": {"hiden": [8]}},
            r"unknown DCNv2Config option\(s\) \['hiden'\]; valid options are",
        ),
        ({"model": "dcn3"}, r"unknown model 'dcn3'; choose one of"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"batch_size": -1}, "batch_size"),
        ({"embedding": "hashing", "chunks": {"C1": 2}}, "options of the unified method, not of hashing"),
        ({"embedding": "collisionless", "budget": "1/4"}, "use min_count to shrink it"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"epoch": 3}, "extra"),
    ],
)
def test_invalid_values_name_the_field(changes, message):
    with pytest.raises(ValidationError, match=message):
        ExperimentConfig(**changes)


def test_nonfinite_policy_reaches_the_trainer():
    from featmux.training.config import NonFinitePolicy

    assert ExperimentConfig(on_nonfinite="skip").train_config().on_nonfinite is NonFinitePolicy.SKIP
    assert ExperimentConfig().train_config().on_nonfinite is NonFinitePolicy.STOP
    with pytest.raises(ValidationError, match="on_nonfinite"):
        ExperimentConfig(on_nonfinite="ignore")
