"""Sharding choices for TorchRec tables: planner constraints, fused table optimizers, plans and reports.

What runs where (TorchRec 1.8 / FBGEMM 1.8):

    sharding        cpu (gloo)   cuda (nccl)   note
    data_parallel   yes          yes           table replicated; only when asked for (see ShardingConfig)
    table_wise      yes          yes           whole table on one rank (unified sub-tables spread out)
    column_wise     yes          yes           columns split across ranks
    table_column_w. yes          yes
    row_wise        no           yes           rows split across all ranks: the big shared table
    table_row_wise  no           yes           rows split across the ranks of one host

    fused optimizer      cpu   cuda
    sgd                  yes   yes    (FBGEMM EXACT_SGD)
    adagrad              yes   yes    (EXACT_ADAGRAD: per-element state, like torch.optim.Adagrad)
    rowwise_adagrad      yes   yes    (EXACT_ROWWISE_ADAGRAD: one state per row and shard)
    adam                 no    yes    (ADAM: FBGEMM's CPU kernels lack it)
    partial_rowwise_adam no    yes    (PARTIAL_ROWWISE_ADAM: row-wise second moment)

Table names are those of `TorchRecEmbedding.tables` (`unified_t0`, `hashing__user`, ...).

The dense part (everything outside the tables) is data-parallel (DDP) with its own optimizer,
`DenseOptimizer` (Adam, or SGD), at the run's learning rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, unique
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from featmux.distributed._deps import require_torchrec

require_torchrec()

from fbgemm_gpu.split_embedding_configs import EmbOptimType  # noqa: E402
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder  # noqa: E402
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology  # noqa: E402
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation  # noqa: E402
from torchrec.distributed.planner.types import (  # noqa: E402
    HardwareConfig,
    KernelConfig,
    ShardingOption,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ModuleSharder, ShardingPlan  # noqa: E402
from torchrec.optim import optimizers as trec_optim  # noqa: E402
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad  # noqa: E402

from featmux.distributed.embedding import TorchRecEmbedding  # noqa: E402

GIB = 1 << 30


@unique
class Sharding(Enum):
    """How one table is split across ranks (TorchRec's sharding types)."""

    DATA_PARALLEL = "data_parallel"
    TABLE_WISE = "table_wise"
    COLUMN_WISE = "column_wise"
    TABLE_COLUMN_WISE = "table_column_wise"
    ROW_WISE = "row_wise"
    TABLE_ROW_WISE = "table_row_wise"


CPU_SHARDINGS = frozenset(
    {Sharding.DATA_PARALLEL, Sharding.TABLE_WISE, Sharding.COLUMN_WISE, Sharding.TABLE_COLUMN_WISE}
)


@unique
class TableOptimizer(Enum):
    """The FBGEMM optimizer fused into the tables' backward pass."""

    SGD = "sgd"
    ADAGRAD = "adagrad"
    ROWWISE_ADAGRAD = "rowwise_adagrad"
    ADAM = "adam"
    PARTIAL_ROWWISE_ADAM = "partial_rowwise_adam"


_FBGEMM_OPTIMIZER = {
    TableOptimizer.SGD: EmbOptimType.EXACT_SGD,
    TableOptimizer.ADAGRAD: EmbOptimType.EXACT_ADAGRAD,
    TableOptimizer.ROWWISE_ADAGRAD: EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    TableOptimizer.ADAM: EmbOptimType.ADAM,
    TableOptimizer.PARTIAL_ROWWISE_ADAM: EmbOptimType.PARTIAL_ROWWISE_ADAM,
}
# the torchrec optimizer classes of the same FBGEMM kernels: TorchRec's planner reads a table's class
# (tensor attribute `_optimizer_classes`) to count optimizer state in its memory estimate
_OPTIMIZER_CLASS = {
    TableOptimizer.SGD: trec_optim.SGD,
    TableOptimizer.ADAGRAD: trec_optim.Adagrad,
    TableOptimizer.ROWWISE_ADAGRAD: RowWiseAdagrad,
    TableOptimizer.ADAM: trec_optim.Adam,
    TableOptimizer.PARTIAL_ROWWISE_ADAM: trec_optim.PartialRowWiseAdam,
}
CPU_OPTIMIZERS = frozenset({TableOptimizer.SGD, TableOptimizer.ADAGRAD, TableOptimizer.ROWWISE_ADAGRAD})


@unique
class Kernel(Enum):
    """Where a sharded table's rows live: FUSED (device memory), or FUSED_UVM_CACHING (GPU only: host
    memory with an HBM cache of hot rows, for tables larger than the GPUs)."""

    FUSED = "fused"
    FUSED_UVM_CACHING = "fused_uvm_caching"


@unique
class DenseOptimizer(Enum):
    """The optimizer of the dense (data-parallel) part: ADAM (featmux's choice), or SGD."""

    ADAM = "adam"
    SGD = "sgd"

    def build(self, params: Sequence[nn.Parameter], learning_rate: float) -> torch.optim.Optimizer:
        """The torch optimizer over `params`.

        Args:
            params: the dense parameters.
            learning_rate: its learning rate.
        """
        if self is DenseOptimizer.SGD:
            return torch.optim.SGD(list(params), lr=learning_rate)
        return torch.optim.Adam(list(params), lr=learning_rate)


def _shardings(values: Sequence[Sharding | str]) -> tuple[Sharding, ...]:
    return tuple(Sharding(v) for v in values)


@dataclass(frozen=True)
class TableOptimizerConfig:
    """The fused optimizer of the sharded tables (applied inside backward by FBGEMM).

    Args:
        kind: which optimizer (see the module docstring for what runs on CPU).
        learning_rate: its learning rate.
        eps: its epsilon (FBGEMM's default 1e-8; torch.optim.Adagrad's is 1e-10).

    Example:
        >>> TableOptimizerConfig("rowwise_adagrad", learning_rate=0.05)
    """

    kind: TableOptimizer = TableOptimizer.ADAGRAD
    learning_rate: float = 0.01
    eps: float = 1e-8

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TableOptimizer(self.kind))
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def build_unfused(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        """The same update as the fused kernel, as a torch optimizer on whole (dense) gradients: what a
        replicated (data_parallel) table trains with. Rows a batch does not read get a zero gradient,
        which none of these optimizers turns into a change (as the fused, sparse update).

        Args:
            params: the replicated table weights.
        """
        params, lr, eps = list(params), self.learning_rate, self.eps
        if self.kind is TableOptimizer.SGD:
            return torch.optim.SGD(params, lr=lr)
        if self.kind is TableOptimizer.ADAGRAD:
            return torch.optim.Adagrad(params, lr=lr, eps=eps)
        if self.kind is TableOptimizer.ROWWISE_ADAGRAD:
            return RowWiseAdagrad(params, lr=lr, eps=eps)
        raise ValueError(
            f"a data_parallel table cannot train with {self.kind.value!r}; use sgd, adagrad or "
            "rowwise_adagrad, or shard the table"
        )

    def fused_params(self) -> dict[str, Any]:
        """FBGEMM fused-optimizer parameters for the EBC sharder."""
        return {
            "optimizer": _FBGEMM_OPTIMIZER[self.kind],
            "learning_rate": self.learning_rate,
            "eps": self.eps,
        }


@dataclass(frozen=True)
class ShardingConfig:
    """Planner constraints and the fused optimizer of the sharded tables.

    Args:
        sharding: sharding types the planner may use for every table (empty: all the device supports
            except data_parallel, which the planner would otherwise pick for small tables).
        per_table: sharding types for named tables (e.g. {"unified_t0": ("row_wise",)}), overriding
            `sharding` for them. A data_parallel table trains with `optimizer`'s update, unfused
            (`TableOptimizerConfig.build_unfused`), outside the dense gradient clipping.
        optimizer: the fused table optimizer.
        dense_optimizer: the optimizer of the dense part.
        kernels: compute kernels the planner may use.
        column_shard_width: width of column-wise shards, a multiple of 4 dividing the table width (None:
            the table width split evenly over the ranks, in multiples of 4; TorchRec's own default,
            128 columns, leaves narrow tables unsplit).

    Example:
        >>> ShardingConfig(("table_wise", "column_wise"), optimizer=TableOptimizerConfig("adagrad", 0.05))
        >>> ShardingConfig.parse("row_wise,table_row_wise", ["private__device=data_parallel"])
    """

    sharding: tuple[Sharding, ...] = ()
    per_table: Mapping[str, tuple[Sharding, ...]] = field(default_factory=dict)
    optimizer: TableOptimizerConfig = field(default_factory=TableOptimizerConfig)
    kernels: tuple[Kernel, ...] = (Kernel.FUSED,)
    column_shard_width: int | None = None
    dense_optimizer: DenseOptimizer = DenseOptimizer.ADAM

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense_optimizer", DenseOptimizer(self.dense_optimizer))
        object.__setattr__(self, "sharding", _shardings(self.sharding))
        object.__setattr__(self, "per_table", {k: _shardings(v) for k, v in dict(self.per_table).items()})
        object.__setattr__(self, "kernels", tuple(Kernel(k) for k in self.kernels))
        if not isinstance(self.optimizer, TableOptimizerConfig):
            raise TypeError(f"optimizer must be a TableOptimizerConfig, got {self.optimizer!r}")
        if not self.kernels:
            raise ValueError("kernels must name at least one compute kernel")
        empty = sorted(name for name, kinds in self.per_table.items() if not kinds)
        if empty:
            raise ValueError(f"per_table gives no sharding type for table(s) {empty}")
        if self.column_shard_width is not None and (
            self.column_shard_width < 4 or self.column_shard_width % 4
        ):
            raise ValueError(
                f"column_shard_width must be a positive multiple of 4, got {self.column_shard_width}"
            )

    @classmethod
    def parse(
        cls,
        sharding: str | None = None,
        per_table: Sequence[str] = (),
        optimizer: str = "adagrad",
        learning_rate: float = 0.01,
        column_shard_width: int | None = None,
    ) -> ShardingConfig:
        """Build from command-line strings.

        Args:
            sharding: comma-separated sharding types for every table, e.g. "table_wise,column_wise".
            per_table: items "table=type[,type...]", e.g. "unified_t0=row_wise,table_row_wise".
            optimizer: a `TableOptimizer` value.
            learning_rate: the table learning rate.
            column_shard_width: see the class docstring.
        """
        every = tuple(s.strip() for s in (sharding or "").split(",") if s.strip())
        tables: dict[str, tuple[str, ...]] = {}
        for item in per_table:
            if "=" not in item:
                raise ValueError(f"per-table sharding {item!r} must look like table=type[,type]")
            name, kinds = item.split("=", 1)
            tables[name.strip()] = tuple(k.strip() for k in kinds.split(",") if k.strip())
        try:
            optimizer_config = TableOptimizerConfig(optimizer, learning_rate)  # type: ignore[arg-type]
            return cls(every, tables, optimizer_config, column_shard_width=column_shard_width)  # type: ignore[arg-type]
        except ValueError as err:
            choices = [s.value for s in Sharding] + [o.value for o in TableOptimizer]
            raise ValueError(f"{err} (valid sharding types and optimizers: {choices})") from err

    def check_device(self, device_type: str) -> None:
        """Raise a ValueError if a constraint or the optimizer cannot run on `device_type` (cpu/cuda)."""
        if device_type == "cuda":
            return
        asked = set(self.sharding) | {s for kinds in self.per_table.values() for s in kinds}
        bad = sorted(s.value for s in asked - CPU_SHARDINGS)
        if bad:
            cpu = sorted(s.value for s in CPU_SHARDINGS)
            raise ValueError(f"sharding {bad} needs CUDA (TorchRec on CPU supports {cpu})")
        if self.optimizer.kind not in CPU_OPTIMIZERS:
            raise ValueError(
                f"fused optimizer {self.optimizer.kind.value!r} has no CPU kernel in FBGEMM; on CPU use "
                f"one of {sorted(o.value for o in CPU_OPTIMIZERS)}"
            )
        if any(k is not Kernel.FUSED for k in self.kernels):
            raise ValueError("only the 'fused' kernel runs on CPU")

    def constraints(
        self, embedding: TorchRecEmbedding, topology: Topology
    ) -> dict[str, ParameterConstraints]:
        """Planner constraints for every table of `embedding` (unknown `per_table` names are errors)."""
        device_type = topology.compute_device
        names = [t.name for t in embedding.tables]
        unknown = sorted(set(self.per_table) - set(names))
        if unknown:
            raise ValueError(f"per_table names unknown table(s) {unknown}; the tables are {names}")
        width = embedding.table_dim
        if self.column_shard_width is not None:
            if width % self.column_shard_width:
                raise ValueError(
                    f"column_shard_width {self.column_shard_width} does not divide the table width {width}"
                )
            column = self.column_shard_width
        else:  # the widest multiple of 4 dividing the width that gives every rank a shard, if any
            fits = [w for w in range(4, width + 1, 4) if width % w == 0 and width // w >= topology.world_size]
            column = max(fits) if fits else 4
        default = self.sharding or tuple(
            s
            for s in Sharding
            if (device_type == "cuda" or s in CPU_SHARDINGS) and s is not Sharding.DATA_PARALLEL
        )
        out = {}
        for t in embedding.tables:
            kinds = self.per_table.get(t.name, default)
            out[t.name] = ParameterConstraints(
                sharding_types=[k.value for k in kinds],
                compute_kernels=[k.value for k in self.kernels]
                + (["dense"] if Sharding.DATA_PARALLEL in kinds else []),
                min_partition=column,
                pooling_factors=[1.0] * len(t.slots),
            )
        return out

    def annotate(self, embedding: TorchRecEmbedding) -> None:
        """Tag the (unsharded) tables with the optimizer class, as TorchRec's in-backward optimizer API
        does, so the planner's memory estimate includes the optimizer state."""
        if embedding.is_sharded:
            raise ValueError("annotate the tables before sharding them")
        for weight in embedding.ebc.parameters():
            weight._optimizer_classes = [_OPTIMIZER_CLASS[self.optimizer.kind]]  # type: ignore[attr-defined]
            weight._optimizer_kwargs = [{}]  # type: ignore[attr-defined]

    def sharders(self) -> list[ModuleSharder[nn.Module]]:
        """The EBC sharder carrying the fused optimizer."""
        return [EmbeddingBagCollectionSharder(fused_params=self.optimizer.fused_params())]  # type: ignore[list-item]


def make_topology(
    world_size: int,
    device_type: str = "cpu",
    local_world_size: int | None = None,
    hbm_gib: float | None = None,
    ddr_gib: float | None = None,
) -> Topology:
    """A planner topology; need not match this machine (plan 64 GPUs from a laptop).

    Args:
        world_size: ranks.
        device_type: "cpu" or "cuda".
        local_world_size: ranks per host (table_row_wise shards within a host); default world_size.
        hbm_gib: device memory per rank (cuda), GiB; default TorchRec's (32 GiB).
        ddr_gib: host memory per rank, GiB; default TorchRec's (128 GiB).
    """
    hardware = HardwareConfig(
        hbm_cap_bytes=int(hbm_gib * GIB) if hbm_gib is not None else None,
        ddr_cap_bytes=int(ddr_gib * GIB) if ddr_gib is not None else None,
    )
    trainer = TrainerConfig(world_size=world_size, local_world_size=local_world_size or world_size)
    return TopologyFactory.create_topology(trainer, hardware, KernelConfig(compute_device=device_type))


@dataclass(frozen=True)
class TablePlan:
    """Where one table went.

    Args:
        table: TorchRec table name.
        sharding: sharding type chosen.
        kernel: compute kernel chosen.
        shards: (rank, row offset, column offset, rows, columns) of each shard.
    """

    table: str
    sharding: str
    kernel: str
    shards: tuple[tuple[int, int, int, int, int], ...]


@dataclass(frozen=True)
class PlanReport:
    """A sharding plan in plain values, with the planner's memory estimate per rank.

    Args:
        world_size: ranks planned for.
        device_type: "cpu" or "cuda".
        tables: per-table placement.
        storage_per_rank: planner's estimate per rank in bytes, {"hbm": [...], "ddr": [...]}, covering
            the shards (weights, optimizer state, IO buffers); empty when unknown.
        text: TorchRec's own rendering of the plan.
    """

    world_size: int
    device_type: str
    tables: tuple[TablePlan, ...]
    storage_per_rank: Mapping[str, tuple[int, ...]]
    text: str

    def to_markdown(self) -> str:
        """A table per sharded table and one of the estimated memory per rank."""
        lines = [
            "| table | sharding | kernel | shards (rank: rows x cols @ row offset) |",
            "|---|---|---|---|",
        ]
        for t in self.tables:
            shown = [f"{r}: {h:,} x {w} @ {ro:,}" + (f"+c{co}" if co else "") for r, ro, co, h, w in t.shards]
            if len(shown) > 8:
                shown = [*shown[:4], f"... ({len(shown) - 8} more) ...", *shown[-4:]]
            lines.append(f"| {t.table} | {t.sharding} | {t.kernel} | {'; '.join(shown)} |")
        if self.storage_per_rank:
            lines += ["", "| rank | planner estimate, HBM GiB | planner estimate, DDR GiB |", "|---|---|---|"]
            hbm, ddr = self.storage_per_rank["hbm"], self.storage_per_rank["ddr"]
            ranks = list(range(self.world_size))
            if len(ranks) > 8:
                ranks = [*ranks[:4], -1, *ranks[-4:]]
            for r in ranks:
                lines.append("| ... | | |" if r < 0 else f"| {r} | {hbm[r] / GIB:.2f} | {ddr[r] / GIB:.2f} |")
        return "\n".join(lines)


def _report(plan: ShardingPlan, best: list[ShardingOption] | None, topology: Topology) -> PlanReport:
    tables = []
    for module_plan in plan.plan.values():
        for name, p in module_plan.items():  # type: ignore[attr-defined]
            shards = []
            for shard in p.sharding_spec.shards if p.sharding_spec is not None else []:
                rank = shard.placement.rank() if shard.placement is not None else -1
                ro, co = shard.shard_offsets
                h, w = shard.shard_sizes
                shards.append((rank, ro, co, h, w))
            if not shards and p.ranks:
                shards = [(r, 0, 0, -1, -1) for r in p.ranks]
            tables.append(TablePlan(name, p.sharding_type, p.compute_kernel, tuple(shards)))
    storage: dict[str, tuple[int, ...]] = {}
    if best:
        hbm = [0] * topology.world_size
        ddr = [0] * topology.world_size
        for option in best:
            for shard in option.shards:
                if shard.rank is not None and shard.storage is not None:
                    hbm[shard.rank] += shard.storage.hbm
                    ddr[shard.rank] += shard.storage.ddr
        storage = {"hbm": tuple(hbm), "ddr": tuple(ddr)}
    return PlanReport(topology.world_size, topology.compute_device, tuple(tables), storage, str(plan))


def plan_sharding(
    model: nn.Module,
    embedding: TorchRecEmbedding,
    config: ShardingConfig,
    topology: Topology,
    batch_size: int,
    collective: bool = False,
) -> tuple[ShardingPlan, PlanReport]:
    """Run TorchRec's planner for the tables of `embedding` inside `model` (which may be on meta).

    Args:
        model: the model holding `embedding` (the planner looks for EBCs anywhere inside it).
        embedding: the TorchRec-backed embedding (its table names key the constraints).
        config: constraints and fused optimizer.
        topology: see `make_topology`; a fake one plans for hardware you do not have.
        batch_size: per-rank batch size (the planner's perf and IO-buffer estimates use it).
        collective: plan on rank 0 and broadcast (inside a process group); False plans locally.

    Returns:
        (the plan for DistributedModelParallel, a `PlanReport`).
    """
    config.check_device(topology.compute_device)
    config.annotate(embedding)
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        constraints=config.constraints(embedding, topology),
        # keep 15% of each rank's memory for the dense part, activations and buffers (TorchRec's
        # default heuristic mis-sizes the dense part of models built on meta)
        storage_reservation=FixedPercentageStorageReservation(0.15),
        debug=False,
    )
    sharders = config.sharders()
    if collective:
        plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    else:
        plan = planner.plan(model, sharders)
    best = getattr(planner, "_best_plan", None)  # the chosen options, with the planner's storage estimates
    report = _report(plan, best, topology)
    if collective:  # only rank 0 planned (and estimated): every rank gets its report
        shared = [report]
        dist.broadcast_object_list(shared, src=0)
        report = shared[0]
    return plan, report
