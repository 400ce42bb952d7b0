from __future__ import annotations

import warnings

import numpy as np
import pytest

from featmux.analysis.planner import (
    PlannerConfig,
    collision_probability,
    expected_collision_rate,
    foreign_share,
    parse_memory,
    plan_summary,
    plan_unified,
)
from featmux.embeddings import Vocabulary, build_embedding
from featmux.features import CategoricalFeature
from featmux.training.experiment import ExperimentConfig


def test_closed_form_by_hand():
    assert expected_collision_rate(3, 4) == pytest.approx(1 - (3 / 4) ** 2)
    assert expected_collision_rate(1, 10) == 0.0  # alone
    assert expected_collision_rate(2, 1) == 1.0  # one row
    assert collision_probability(1, 2) == pytest.approx(0.5)
    tiny = expected_collision_rate(2, 10**12)
    assert tiny == pytest.approx(1e-12, rel=1e-6)  # no cancellation for huge tables
    rates = expected_collision_rate(np.array([1, 2, 11]), np.array([5, 5, 10]))
    np.testing.assert_allclose(rates, [0.0, 0.2, 1 - 0.9**10])


def test_foreign_share_by_hand():
    # values with counts 3 and 1 in rows also holding 6 occurrences of other values: C = 10, m = 2
    got = foreign_share(np.array([3, 1]), table_traffic=10, rows=2)
    expected = (3 * (3.5 / 6.5) + 1 * (4.5 / 5.5)) / 4
    assert got == pytest.approx(expected)


def test_parse_memory():
    assert parse_memory("64MiB") == 64 * 2**20
    assert parse_memory("64") == parse_memory("64MB") == 64 * 10**6
    assert parse_memory("1.5 GB") == 1_500_000_000 and parse_memory("512kB") == 512_000
    for bad in ("", "12 parsecs", "-3MB", "0"):
        with pytest.raises(ValueError):
            parse_memory(bad)


# a: 100 values, b: 50, tiny: 3 (private). D = 4, 4 bytes per parameter.
CARDS = {"a": 100, "b": 50, "tiny": 3}
# stored buffers of that layer, by hand: the private vocabulary, 3 keys + 1 row start, * 8 (the index
# buffers, rebuilt from the config, are not stored and not counted)
BUFFERS = (3 + 1) * 8
BUDGET = 4 * 4 * (1000 + 4) + BUFFERS  # 1000 shared rows + 4 private rows of 4 floats


def test_plan_arithmetic_by_hand():
    config = PlannerConfig(budget_bytes=BUDGET, embedding_dim=4, private_max_cardinality=3)
    plan = plan_unified(CARDS, config)
    assert (plan.shared_rows, plan.num_tables, plan.private, plan.chunks) == (1000, 1, {"tiny": 3}, {})
    assert plan.parameters == (1000 + 4) * 4 and plan.memory_bytes == BUDGET
    a, b, tiny = plan.features
    q = 1 - 1 / 1000
    assert a.collision == pytest.approx(1 - q**149) and b.collision == pytest.approx(1 - q**149)
    assert a.within == pytest.approx(1 - q**99) and a.cross == pytest.approx(1 - q**50)
    assert b.within == pytest.approx(1 - q**49) and b.cross == pytest.approx(1 - q**100)
    assert a.all_chunks == a.collision and a.indistinguishable == pytest.approx(a.within)
    assert tiny.private and tiny.collision == 0.0
    # per-feature hashing at the same 1004 rows: every feature gets its cardinality
    assert (a.hashing_rows, b.hashing_rows, tiny.hashing_rows) == (100, 50, 3)
    assert a.hashing_collision == pytest.approx(1 - 0.99**99)
    assert plan.objective == pytest.approx((100 * a.collision + 50 * b.collision) / 153)
    assert plan.tables[0].occupants == 150 and plan.tables[0].load == pytest.approx(0.15)
    # one byte less and the shared table loses a row
    smaller = plan_unified(
        CARDS, PlannerConfig(budget_bytes=BUDGET - 1, embedding_dim=4, private_max_cardinality=3)
    )
    assert smaller.shared_rows == 999 and smaller.memory_bytes <= BUDGET - 1


def _vocabulary(cards):
    vocab = Vocabulary(list(cards))
    for name, n in cards.items():
        vocab.update(name, np.arange(n, dtype=np.int64))
    return vocab


def test_plan_builds_exactly_that_layer():
    cards = {"user": 5000, "item": 800, "city": 40, "device": 4}
    config = PlannerConfig(
        budget_bytes=200_000, embedding_dim=8, max_chunks=3, max_table_rows=3000, private_max_cardinality=4
    )
    plan = plan_unified(cards, config)
    assert plan.num_tables == 3  # ceil((200_000 // 32 - 5 private rows) / 3000)
    assert plan.chunks  # multi-probe lowers the objective here
    options = plan.experiment_options()
    spec = ExperimentConfig(**options).embedding_spec()
    features = [CategoricalFeature(n) for n in cards]
    with warnings.catch_warnings():  # this plan rounds a little above the collisionless size, on purpose
        warnings.simplefilter("ignore", UserWarning)
        layer = build_embedding(features, spec, _vocabulary(cards))
    assert layer.num_parameters() == plan.parameters
    assert layer.memory_bytes() == plan.memory_bytes <= config.budget_bytes
    assert layer.shared.num_rows == plan.shared_rows and set(layer.unified_config.private) == {"device"}
    # the planner's placement is the layer's
    for f in plan.features:
        if not f.private:
            slots = [i for i, s in enumerate(layer.shared.slot_names) if s.rsplit("#", 1)[0] == f.name]
            assert tuple(layer.shared.slot_tables[i] for i in slots) == f.tables
    assert max(t.rows for t in plan.tables) <= 3000


def test_greedy_chunks_lower_the_objective():
    cards = {"user": 5000, "item": 800, "city": 40}
    one = plan_unified(cards, PlannerConfig(budget_bytes=400_000, embedding_dim=8))
    more = plan_unified(cards, PlannerConfig(budget_bytes=400_000, embedding_dim=8, max_chunks=4))
    assert one.chunks == {} and more.chunks and more.objective < one.objective
    capped = plan_unified(
        cards, PlannerConfig(budget_bytes=400_000, embedding_dim=8, max_chunks=4, max_slots=4)
    )
    assert capped.num_slots == 4
    user = next(f for f in more.features if f.name == "user")
    if user.chunks > 1:
        assert user.indistinguishable < user.within


def test_importance_and_counts():
    cards = {"a": 300, "b": 300}
    counts = {"a": np.full(300, 10), "b": np.arange(1, 301)}
    plan = plan_unified(
        cards, PlannerConfig(budget_bytes=20_000, embedding_dim=4), {"a": 1.0, "b": 3.0}, counts
    )
    assert plan.weights == {"a": 1.0, "b": 3.0}
    a, b = plan.features
    assert 0 < a.foreign_share < 1 and 0 < b.foreign_share < 1 and a.hashing_foreign_share is not None
    summary = plan_summary(plan)
    assert summary["experiment_options"]["budget"] == f"params:{plan.parameters}"
    assert len(summary["features"]) == 2


@pytest.mark.parametrize(
    ("cards", "config", "message"),
    [
        (
            {"a": 10},
            PlannerConfig(budget_bytes=100, embedding_dim=4, private_max_cardinality=10),
            "every feature",
        ),
        ({"a": 10_000}, PlannerConfig(budget_bytes=10, embedding_dim=4), "shared rows"),
        ({"a": 10, "b": 10}, PlannerConfig(budget_bytes=10**6, embedding_dim=4, num_tables=3), "sub-tables"),
        ({}, PlannerConfig(budget_bytes=10**6, embedding_dim=4), "at least one feature"),
    ],
)
def test_plans_that_cannot_be_made(cards, config, message):
    with pytest.raises(ValueError, match=message):
        plan_unified(cards, config)


def test_planner_config_validation():
    with pytest.raises(ValueError, match="embedding_dim"):
        PlannerConfig(budget_bytes=10, embedding_dim=0)
    with pytest.raises(ValueError, match="not both"):
        PlannerConfig(budget_bytes=10, embedding_dim=4, num_tables=2, max_table_rows=10)
