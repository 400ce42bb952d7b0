"""Beyond one machine: featmux tables as TorchRec tables, sharded with DistributedModelParallel.

Optional: needs TorchRec and FBGEMM (`bash scripts/install.sh --torchrec`).

- `TorchRecEmbedding`: any table-based featmux layer (unified, hashing, collisionless) as a TorchRec
  EmbeddingBagCollection, same `[B, S, D]` output (bit-identical lookups), weights both ways.
- `ShardingConfig`, `plan_sharding`, `make_topology`: planner constraints, fused table optimizer,
  dense optimizer, plans for real or imagined hardware (`PlanReport`).
- `DistributedTrainer`: DMP training (fused optimizer for tables, DDP + Adam for the dense part),
  per-rank data shards, AUC over all ranks, non-finite losses caught on every rank together, rotating
  checksummed sharded checkpoints (DCP) and export to a featmux file.
- `run_distributed_training`: what `featmux train --distributed` runs on every torchrun rank.
- `GlobalBatchNorm`: batch norm over the global batch (all ranks' real rows), what DistributedTrainer
  puts in place of each BatchNorm1d.
- `init_distributed`, `resolve_backend`, `launch_local`: join a torchrun job (the backend follows the
  training device), or start N local gloo processes.
- `tables_on_meta(draws)`, `TorchRecEmbedding.fill_from_draws`: build on meta, then write each rank's
  shards with the values a one-process model starts from (`TableDraw`).
"""

from featmux.distributed._deps import require_torchrec

require_torchrec()

from featmux.distributed.batch_norm import GlobalBatchNorm  # noqa: E402
from featmux.distributed.data import RankBatch, rank_batches  # noqa: E402
from featmux.distributed.embedding import TableDraw, TableSlice, TorchRecEmbedding, tables_on_meta  # noqa: E402
from featmux.distributed.launch import (  # noqa: E402
    Backend,
    DistEnv,
    current_env,
    init_distributed,
    launch_local,
    resolve_backend,
)
from featmux.distributed.run import DistributedOptions, run_distributed_training  # noqa: E402
from featmux.distributed.sharding import (  # noqa: E402
    CPU_OPTIMIZERS,
    CPU_SHARDINGS,
    DenseOptimizer,
    Kernel,
    PlanReport,
    Sharding,
    ShardingConfig,
    TableOptimizer,
    TableOptimizerConfig,
    TablePlan,
    make_topology,
    plan_sharding,
)
from featmux.distributed.train import DistributedFitResult, DistributedState, DistributedTrainer, TableInit  # noqa: E402

__all__ = [
    "CPU_OPTIMIZERS",
    "CPU_SHARDINGS",
    "Backend",
    "DenseOptimizer",
    "DistEnv",
    "DistributedFitResult",
    "DistributedOptions",
    "DistributedState",
    "DistributedTrainer",
    "GlobalBatchNorm",
    "Kernel",
    "PlanReport",
    "RankBatch",
    "Sharding",
    "ShardingConfig",
    "TableDraw",
    "TableInit",
    "TableOptimizer",
    "TableOptimizerConfig",
    "TablePlan",
    "TableSlice",
    "TorchRecEmbedding",
    "current_env",
    "init_distributed",
    "launch_local",
    "make_topology",
    "plan_sharding",
    "rank_batches",
    "resolve_backend",
    "run_distributed_training",
    "tables_on_meta",
]
