"""Sharding constraints, CPU/GPU checks, and plans for hardware we do not have (fake topologies)."""

from __future__ import annotations

import pytest
import torch

from featmux.distributed import (
    DistributedOptions,
    Sharding,
    ShardingConfig,
    TableOptimizer,
    TableOptimizerConfig,
    TorchRecEmbedding,
    make_topology,
    plan_sharding,
    tables_on_meta,
)
from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.models import build_model

CRITEO = tuple(CategoricalFeature(f"C{i}", ValueEncoding.HEX) for i in range(1, 27))


def _billion(num_tables: int = 1, dim: int = 16):
    with tables_on_meta():
        layer = UnifiedEmbedding(
            CRITEO, UnifiedEmbeddingConfig(rows=10**9, embedding_dim=dim, num_tables=num_tables)
        )
    embedding = TorchRecEmbedding(layer, device=torch.device("meta"))
    with torch.device("meta"):
        model = build_model("dcnv2", embedding, 13, {"cross_layers": 2, "hidden": [748, 748]})
    return model, embedding


def test_parse_and_validate():
    config = ShardingConfig.parse(
        "table_wise, column_wise", ["unified_t0=row_wise,table_row_wise"], "rowwise_adagrad", 0.1
    )
    assert config.sharding == (Sharding.TABLE_WISE, Sharding.COLUMN_WISE)
    assert config.per_table == {"unified_t0": (Sharding.ROW_WISE, Sharding.TABLE_ROW_WISE)}
    assert config.optimizer == TableOptimizerConfig(TableOptimizer.ROWWISE_ADAGRAD, 0.1)
    with pytest.raises(ValueError, match="valid sharding types"):
        ShardingConfig.parse("diagonal")
    with pytest.raises(ValueError, match="table=type"):
        ShardingConfig.parse(None, ["unified_t0"])
    with pytest.raises(ValueError, match="learning_rate"):
        TableOptimizerConfig(learning_rate=0)
    options = DistributedOptions.parse(
        sharding="table_wise", table_optimizer="sgd", backend="gloo", table_init="shard"
    )
    assert options.sharding.optimizer.kind is TableOptimizer.SGD and options.table_init.value == "shard"


def test_cpu_limits_are_explained():
    ShardingConfig(sharding=("table_wise", "column_wise", "data_parallel")).check_device("cpu")
    with pytest.raises(ValueError, match="needs CUDA"):
        ShardingConfig(per_table={"unified_t0": ("row_wise",)}).check_device("cpu")
    with pytest.raises(ValueError, match="no CPU kernel"):
        ShardingConfig(optimizer=TableOptimizerConfig("adam")).check_device("cpu")
    ShardingConfig(sharding=("row_wise",), optimizer=TableOptimizerConfig("adam")).check_device("cuda")


def test_unknown_table_in_constraints():
    _, embedding = _billion()
    with pytest.raises(ValueError, match="unknown table"):
        ShardingConfig(per_table={"unified_t9": ("table_wise",)}).constraints(embedding, make_topology(2))


@pytest.mark.parametrize(("dim", "world", "width"), [(16, 2, 8), (10, 2, 4), (16, 8, 4), (64, 4, 16)])
def test_column_shards_split_narrow_tables_over_the_ranks(dim, world, width):
    _, embedding = _billion(dim=dim)
    constraints = ShardingConfig(("column_wise",)).constraints(embedding, make_topology(world))
    assert constraints["unified_t0"].min_partition == width  # TorchRec's default (128) would not split
    with pytest.raises(ValueError, match="does not divide"):
        ShardingConfig(("column_wise",), column_shard_width=24).constraints(embedding, make_topology(world))


@pytest.mark.parametrize(("world", "hosts"), [(8, 1), (64, 8)])
def test_plan_a_billion_row_unified_table(world, hosts):
    model, embedding = _billion()
    config = ShardingConfig(sharding=("row_wise",), optimizer=TableOptimizerConfig("rowwise_adagrad"))
    topology = make_topology(world, "cuda", local_world_size=world // hosts, hbm_gib=80)
    _, report = plan_sharding(model, embedding, config, topology, batch_size=512)
    (table,) = report.tables
    assert table.table == "unified_t0" and table.sharding == "row_wise"
    assert sorted(r for r, *_ in table.shards) == list(range(world))
    assert sum(rows for *_, rows, _ in table.shards) == 10**9
    # weights + one row-wise Adagrad state per row, spread evenly: 10^9 * (16 + 1) * 4 B / world,
    # plus the planner's input/output buffers (a few percent)
    per_rank = 10**9 * 17 * 4 / world
    assert all(per_rank <= h < 1.1 * per_rank for h in report.storage_per_rank["hbm"])
    assert "unified_t0" in report.to_markdown()


def test_sub_tables_spread_over_hosts_with_table_row_wise():
    model, embedding = _billion(num_tables=8)
    config = ShardingConfig(sharding=("table_row_wise",), optimizer=TableOptimizerConfig("rowwise_adagrad"))
    _, report = plan_sharding(
        model, embedding, config, make_topology(64, "cuda", 8, hbm_gib=80), batch_size=512
    )
    hosts = {t.table: {r // 8 for r, *_ in t.shards} for t in report.tables}
    assert all(len(h) == 1 for h in hosts.values())  # each sub-table inside one host
    assert len(set().union(*hosts.values())) == 8  # and the 8 sub-tables on 8 different hosts


def test_cpu_plan_puts_sub_tables_on_different_ranks():
    model, embedding = _billion(num_tables=2, dim=8)
    config = ShardingConfig(sharding=("table_wise",))
    _, report = plan_sharding(model, embedding, config, make_topology(2, "cpu", ddr_gib=1024), batch_size=512)
    assert sorted(r for t in report.tables for r, *_ in t.shards) == [0, 1]


def test_the_planner_is_not_offered_data_parallel_unless_a_table_asks():
    _, embedding = _billion(num_tables=2)
    for device in ("cpu", "cuda"):
        constraints = ShardingConfig().constraints(embedding, make_topology(2, device))
        assert all("data_parallel" not in c.sharding_types for c in constraints.values())
    asked = ShardingConfig(per_table={"unified_t1": ("data_parallel",)}).constraints(
        embedding, make_topology(2)
    )
    assert asked["unified_t1"].sharding_types == ["data_parallel"]
    assert "dense" in asked["unified_t1"].compute_kernels


def test_table_optimizer_unfused_for_replicated_tables():
    weight = torch.nn.Parameter(torch.ones(3, 4))
    for kind, name in [("sgd", "SGD"), ("adagrad", "Adagrad"), ("rowwise_adagrad", "RowWiseAdagrad")]:
        optimizer = TableOptimizerConfig(kind, 0.5).build_unfused([weight])
        assert type(optimizer).__name__ == name and optimizer.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="data_parallel table cannot train with 'adam'"):
        TableOptimizerConfig("adam").build_unfused([weight])


def test_backend_follows_the_device_not_a_visible_gpu(monkeypatch):
    from featmux.distributed import Backend, resolve_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host, CPU build of FBGEMM
    assert resolve_backend("auto", "cpu") is Backend.GLOO
    with pytest.raises(ValueError, match="CUDA build of fbgemm-gpu"):
        resolve_backend("auto", "cuda")
    with pytest.raises(ValueError, match="nccl needs --device cuda"):
        resolve_backend("nccl", "cpu")
    with pytest.raises(ValueError, match="needs the nccl backend"):
        resolve_backend("gloo", "cuda")
