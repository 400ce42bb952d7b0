"""Beyond one machine: featmux tables as TorchRec tables, sharded with DistributedModelParallel.

Optional: needs TorchRec and FBGEMM (`bash scripts/install.sh --torchrec`).

- `TorchRecEmbedding`: any table-based featmux layer (unified, hashing, collisionless) as a TorchRec
  EmbeddingBagCollection, same `[B, S, D]` output (bit-identical lookups), weights both ways.
- `ShardingConfig`, `plan_sharding`, `make_topology`: planner constraints, fused table optimizer,
  plans for real or imagined hardware (`PlanReport`).
- `DistributedTrainer`: DMP training (fused optimizer for tables, DDP + Adam for the dense part),
  per-rank data shards, AUC over all ranks, sharded checkpoints (DCP) and export to a featmux file.
- `run_distributed_training`: what `featmux train --distributed` runs on every torchrun rank.
- `init_distributed`, `launch_local`: join a torchrun job, or start N local gloo processes.
"""

from featmux.distributed._deps import require_torchrec

require_torchrec()

from featmux.distributed.data import RankBatch, rank_batches  # noqa: E402
from featmux.distributed.embedding import TableSlice, TorchRecEmbedding, tables_on_meta  # noqa: E402
from featmux.distributed.launch import Backend, DistEnv, current_env, init_distributed, launch_local  # noqa: E402
from featmux.distributed.run import DistributedOptions, run_distributed_training  # noqa: E402
from featmux.distributed.sharding import (  # noqa: E402
    CPU_OPTIMIZERS,
    CPU_SHARDINGS,
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
    "DistEnv",
    "DistributedFitResult",
    "DistributedOptions",
    "DistributedState",
    "DistributedTrainer",
    "Kernel",
    "PlanReport",
    "RankBatch",
    "Sharding",
    "ShardingConfig",
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
    "run_distributed_training",
    "tables_on_meta",
]
