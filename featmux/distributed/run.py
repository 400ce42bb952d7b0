"""`featmux train --distributed`: one experiment on every rank of a torchrun job.

    torchrun --nproc-per-node 2 -m featmux.cli.main train --distributed --dataset frappe \\
        --data ../shared/data/frappe --embedding unified --budget 1/4 --sharding table_wise,column_wise

Every process calls `run_distributed_training(config, options)` with the same arguments; the result
(identical on every rank) has the keys of `featmux.training.experiment.run_experiment`'s result plus
a `distributed` block (world size, backend, sharding plan, table optimizer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from featmux.data.prepare import prepare
from featmux.distributed.embedding import TorchRecEmbedding, tables_on_meta
from featmux.distributed.launch import Backend, init_distributed
from featmux.distributed.sharding import ShardingConfig
from featmux.distributed.train import DistributedTrainer, TableInit
from featmux.embeddings import build_embedding, collisionless_parameters
from featmux.models import build_model
from featmux.training.experiment import ExperimentConfig, event_logger, experiment_result


@dataclass(frozen=True)
class DistributedOptions:
    """What `--distributed` adds to an `ExperimentConfig`.

    Args:
        sharding: planner constraints and the fused table optimizer.
        backend: collective backend (AUTO: nccl with CUDA, else gloo).
        table_init: FEATMUX (same start as a one-process run) or SHARD (each rank initializes its own
            shards; for tables that do not fit one process).
        export: write `checkpoint_dir/model.pt`, an ordinary featmux model file, at the end.

    Example:
        >>> DistributedOptions.parse(sharding="table_wise,column_wise", table_optimizer="rowwise_adagrad")
    """

    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    backend: Backend = Backend.AUTO
    table_init: TableInit = TableInit.FEATMUX
    export: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", Backend(self.backend))
        object.__setattr__(self, "table_init", TableInit(self.table_init))

    @classmethod
    def parse(
        cls,
        sharding: str | None = None,
        shard_table: Sequence[str] = (),
        table_optimizer: str = "adagrad",
        table_learning_rate: float = 0.01,
        backend: str = "auto",
        table_init: str = "featmux",
        column_shard_width: int | None = None,
    ) -> DistributedOptions:
        """Build from command-line strings (the CLI flags of the same names).

        Args:
            sharding: comma-separated sharding types for every table ("table_wise,column_wise").
            shard_table: per-table constraints "table=type[,type]" (e.g. "unified_t0=row_wise").
            table_optimizer: sgd, adagrad, rowwise_adagrad (CPU and GPU), adam, partial_rowwise_adam (GPU).
            table_learning_rate: learning rate of the fused table optimizer.
            backend: auto, gloo or nccl.
            table_init: featmux or shard.
            column_shard_width: width of column-wise shards (None: split each table over the ranks).
        """
        return cls(
            ShardingConfig.parse(
                sharding, shard_table, table_optimizer, table_learning_rate, column_shard_width
            ),
            Backend(backend),
            TableInit(table_init),
        )


def run_distributed_training(
    config: ExperimentConfig,
    options: DistributedOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one experiment as one rank of a distributed job (call it on every rank).

    Joins the process group torchrun describes (or a group of one), prepares the data (rank 0 encodes
    the cache, the others then read it), builds the model around a `TorchRecEmbedding`, shards it,
    trains with `DistributedTrainer`, evaluates on test and, with a checkpoint_dir, exports a
    single-process model file.

    Args:
        config: the experiment (batch_size is the global batch; learning_rate is the dense Adam's; the
            tables use `options.sharding`'s fused optimizer instead of `config.optimizer`).
        options: sharding, backend, table initialization.
        log: receives progress messages on rank 0.

    Returns:
        The result dict of `run_experiment` plus "distributed": {...}; the same on every rank.

    Example:
        >>> result = run_distributed_training(ExperimentConfig(dataset="frappe", data="data/frappe"),
        ...                                   DistributedOptions.parse(sharding="table_wise"))
    """
    options = options or DistributedOptions()
    env = init_distributed(options.backend)
    say = log if (log is not None and env.is_main) else (lambda _m: None)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()

    def load() -> Any:
        return prepare(
            config.dataset, config.data, config.source_options(), config.cache_dir, config.skip_bad_rows, say
        )

    data = load() if env.is_main else None
    dist.barrier()  # rank 0 has written the cache: the others read it
    data = data if data is not None else load()
    prepare_seconds = time.perf_counter() - t0
    schema = data.schema
    torch.manual_seed(config.seed)  # as build_experiment_model: the same start as `featmux train`
    if options.table_init is TableInit.FEATMUX:
        layer = build_embedding(schema.categorical, config.embedding_spec(), data.vocabulary)
        embedding = TorchRecEmbedding(layer)
    else:
        with tables_on_meta():
            layer = build_embedding(schema.categorical, config.embedding_spec(), data.vocabulary)
        embedding = TorchRecEmbedding(layer, device=torch.device("meta"))
    del layer
    model = build_model(config.model, embedding, len(schema.numeric), config.model_options)
    full = collisionless_parameters(
        schema.categorical, data.vocabulary, config.embedding_dim, config.min_count
    )
    params = embedding.num_parameters()
    say(
        f"{config.embedding.value} embedding as {len(embedding.tables)} TorchRec table(s), "
        f"{params:,} parameters ({params / full:.4g} x collisionless), "
        f"{env.world_size} rank(s) on {env.backend.value}"
    )
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    on_event = event_logger(say, with_epoch=False)
    trainer = DistributedTrainer(
        model, config.train_config(), options.sharding, schema, checkpoint_dir, on_event
    )
    say("sharding plan:\n" + trainer.plan_report.to_markdown())
    fit = trainer.fit(data.train, data.valid)
    test = trainer.evaluate(data.test) if data.test is not None else None
    if checkpoint_dir is not None and options.export:
        trainer.export_model(checkpoint_dir / "model.pt")
    dense = sum(p.numel() for p in trainer.dense_parameters)
    return {
        **experiment_result(config, data, embedding, dense, fit, test, prepare_seconds),
        "losses": fit.losses,
        "distributed": {
            "rank": env.rank,
            "world_size": env.world_size,
            "backend": env.backend.value,
            "table_optimizer": options.sharding.optimizer.kind.value,
            "table_learning_rate": options.sharding.optimizer.learning_rate,
            "table_init": options.table_init.value,
            "tables": [t.name for t in embedding.tables],
            "plan": trainer.plan_report.to_markdown(),
        },
    }
