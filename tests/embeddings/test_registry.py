"""The method registry: names, options, solve -> config -> rebuild, shorthands, and equal budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import yaml

from featmux.embeddings import (
    Budget,
    EmbeddingSpec,
    HashingEmbedding,
    build_embedding,
    embedding_from_config,
    get_method,
    method_names,
    registry,
)
from featmux.embeddings.hashing import HashingMethod
from featmux.training.experiment import ExperimentConfig

DIM = 8
FULL_ROWS = 1000 + 300 + 4 + 18 + 4


def test_the_three_methods_are_registered_and_names_are_case_insensitive():
    assert {"collisionless", "hashing", "unified"} <= set(method_names())
    assert get_method("Unified").name == "unified"
    with pytest.raises(
        ValueError, match=r"unknown embedding method 'nope'; choose one of \[.*'collisionless'"
    ):
        get_method("nope")
    assert ExperimentConfig(embedding="HASHING").embedding == "hashing"


@dataclass(frozen=True)
class _EveryOtherOptions:
    stride: int = 2


class _EveryOther(HashingMethod):
    """A new method, as one module would add it: hashing with fewer rows (stride), under a new name."""

    name = "every_other"
    options = _EveryOtherOptions

    def solve(self, features, target, stats, embedding_dim, options) -> dict[str, Any]:
        config = super().solve(features, target, stats, embedding_dim, options)
        return {
            **config,
            "method": self.name,
            "rows": {n: max(1, r // options.stride) for n, r in config["rows"].items()},
        }


def test_a_registered_method_is_built_configured_and_rebuilt_without_other_changes(
    monkeypatch, features, vocabulary, sparse
):
    monkeypatch.setitem(registry._METHODS, "every_other", _EveryOther())
    spec = EmbeddingSpec("every-other", DIM, Budget.parse("1/4"), options={"stride": 4})
    layer = build_embedding(features, spec, vocabulary)
    assert isinstance(layer, HashingEmbedding)
    assert sum(layer.rows.values()) == pytest.approx(FULL_ROWS / 4 / 4, abs=4)
    rebuilt = embedding_from_config(features, {**layer.config(), "method": "every_other"})
    rebuilt.load_state_dict(layer.state_dict())
    torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)
    config = ExperimentConfig(
        embedding="every_other", embedding_options={"stride": 4}, budget="1/4", embedding_dim=DIM
    )
    assert config.embedding_spec() == spec
    with pytest.raises(
        ValueError, match=r"unknown every_other option\(s\) \['strde'\]; valid options are \['stride'\]"
    ):
        EmbeddingSpec("every_other", DIM, Budget.parse("1/4"), options={"strde": 4})


def test_unified_checkpoint_config_of_the_previous_format_still_loads(features, sparse):
    # what `UnifiedEmbedding.config()` wrote before the registry: the registry reads the same keys
    old = {
        "method": "unified",
        "embedding_dim": DIM,
        "rows": 300,
        "num_tables": 2,
        "chunks": {"user": 2},
        "default_chunks": 1,
        "private": {},
    }
    layer = embedding_from_config(features, old)
    assert layer.config() == {**old, "placement": 1}  # no layout version: the old round-robin placement
    assert layer(sparse).shape == (6, 5, DIM)


def test_shorthands_become_unified_options_and_flags_win_over_the_yaml(tmp_path):
    config = ExperimentConfig(num_tables=2, default_chunks=3)
    assert config.embedding_options == {"num_tables": 2, "default_chunks": 3}
    assert config.embedding_spec().options.num_tables == 2
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"embedding_options": {"num_tables": 4, "default_chunks": 2}}))
    merged = ExperimentConfig.from_yaml(path, num_tables=8)
    assert merged.embedding_options == {"num_tables": 8, "default_chunks": 2}
    with pytest.raises(ValueError, match=r"\['chunks'\] are options of the unified method, not of hashing"):
        ExperimentConfig(embedding="hashing", chunks={"a": 2})


@pytest.mark.parametrize("fraction", ["1", "1/4", "1/16", "1/64"])
def test_hashing_and_unified_get_the_same_rows_at_the_same_budget(features, vocabulary, fraction):
    """Issue 11 item 5: at equal budget their parameter counts agree within one row (here exactly)."""
    budget = Budget.parse(fraction)
    hashing = build_embedding(features, EmbeddingSpec("hashing", DIM, budget), vocabulary)
    unified = build_embedding(features, EmbeddingSpec("unified", DIM, budget), vocabulary)
    assert hashing.num_parameters() == unified.num_parameters()
    budget_bytes = round(budget.fraction * FULL_ROWS * DIM * 4)
    assert budget_bytes - DIM * 4 < hashing.memory_bytes() <= budget_bytes
    if fraction == "1":  # the collisionless row count: every feature its |V_f| + 1 rows
        assert hashing.rows == {"user": 1001, "item": 301, "device": 5, "genres": 19}


def test_hashing_below_one_row_per_feature_refuses_instead_of_exceeding_the_budget(features, vocabulary):
    with pytest.raises(ValueError, match="at least one row for each of the 4 features"):
        build_embedding(features, EmbeddingSpec("hashing", DIM, Budget(rows=3)), vocabulary)
    layer = build_embedding(features, EmbeddingSpec("hashing", DIM, Budget(rows=4)), vocabulary)
    assert layer.num_parameters() == 4 * DIM


@pytest.mark.parametrize(
    "spec",
    [
        EmbeddingSpec("collisionless", DIM),
        EmbeddingSpec("hashing", DIM, Budget.parse("1/8")),
        EmbeddingSpec("unified", DIM, Budget.parse("1/8"), options={"private_max_cardinality": 20}),
    ],
    ids=lambda s: s.method,
)
def test_memory_bytes_is_the_bytes_of_the_state_dict(features, vocabulary, spec):
    layer = build_embedding(features, spec, vocabulary)
    stored = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
    assert layer.memory_bytes() == stored
    meta = embedding_from_config(features, layer.config(), torch.device("meta"))
    assert meta.memory_bytes() == stored  # solve can measure layers without allocating them
