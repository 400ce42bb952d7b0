"""`featmux train --distributed`: one experiment on every rank of a torchrun job.

    torchrun --nproc-per-node 2 -m featmux.cli.main train --distributed --dataset frappe \\
        --data ../shared/data/frappe --embedding unified --budget 1/4 --sharding table_wise,column_wise

Every process calls `run_distributed_training(config, options)` with the same arguments; the result
(identical on every rank) has the keys of `featmux.training.experiment.run_experiment`'s result plus
a `distributed` block (world size, backend, sharding plan, table optimizer, data-parallel tables,
resume, peak memory per rank).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from featmux.data.prepare import prepare
from featmux.data.sources import open_source
from featmux.distributed.embedding import TableDraw, TorchRecEmbedding, tables_on_meta
from featmux.distributed.launch import Backend, init_distributed, resolve_backend
from featmux.distributed.sharding import ShardingConfig
from featmux.distributed.train import DistributedTrainer, TableInit, check_train_config
from featmux.embeddings import Precision, build_embedding, collisionless_parameters, get_method
from featmux.models import build_model
from featmux.training.experiment import ExperimentConfig, event_logger, experiment_result

PREPARE_TIMEOUT = timedelta(hours=12)
"""How long ranks 1.. wait for rank 0 to encode the data cache."""


@dataclass(frozen=True)
class DistributedOptions:
    """What `--distributed` adds to an `ExperimentConfig`.

    Args:
        sharding: planner constraints and the fused table optimizer.
        backend: collective backend (AUTO: nccl with CUDA, else gloo).
        table_init: FEATMUX (same start as a one-process run, replayed per shard) or SHARD (each rank
            draws its own shards; cheaper for huge tables, not a one-process start).
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
        choices = {"backend": (backend, Backend), "table_init": (table_init, TableInit)}
        for name, (value, kind) in choices.items():
            if value not in {k.value for k in kind}:
                raise ValueError(f"{name} {value!r}: choose one of {[k.value for k in kind]}")
        return cls(
            ShardingConfig.parse(
                sharding, shard_table, table_optimizer, table_learning_rate, column_shard_width
            ),
            Backend(backend),
            TableInit(table_init),
        )


def _peak_rss_per_rank() -> list[int]:
    """Every rank's peak resident memory so far, in bytes (collective)."""
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return [int(v) for v in out]


DISTRIBUTED_METHODS = ("collisionless", "hashing", "unified")  # the layers `TorchRecEmbedding` converts


def check_experiment(config: ExperimentConfig) -> None:
    """Raise a ValueError (one line, for the CLI) for an experiment that distributed training cannot run.

    Only the table methods TorchRec shards train distributed, and in fp32: a quantized or pruned
    serving form (`--precision`, `--prune`, `--qat`) would be silently left out.
    """
    method = get_method(config.embedding).name
    if method not in DISTRIBUTED_METHODS:
        raise ValueError(
            f"--distributed trains the {', '.join(DISTRIBUTED_METHODS)} embeddings (TorchRec tables), "
            f"not {method}: train {method} without --distributed"
        )
    served = {"--precision": config.precision is not Precision.FP32, "--prune": config.prune > 0}
    served["--qat"] = config.qat
    given = [flag for flag, on in served.items() if on]
    if given:
        raise ValueError(
            f"{', '.join(given)} does not apply with --distributed (it trains and saves fp32 tables): "
            "quantize or prune in a single-process run"
        )


def run_distributed_training(
    config: ExperimentConfig,
    options: DistributedOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one experiment as one rank of a distributed job (call it on every rank).

    Joins the process group torchrun describes (or a group of one), prepares the data (rank 0 encodes
    the cache while the others wait, up to `PREPARE_TIMEOUT`; then they read it), builds the model on
    the meta device around a `TorchRecEmbedding` (no rank allocates a whole table: DMP materializes
    each rank's shards, `TableInit.FEATMUX` fills them with a one-process run's initial values),
    trains with `DistributedTrainer`, evaluates on test and, with a checkpoint_dir, exports a
    single-process model file.

    Args:
        config: the experiment (batch_size is the global batch; learning_rate is the dense optimizer's;
            the tables use `options.sharding`'s fused optimizer; `optimizer` must stay adam).
        options: sharding, backend, table initialization.
        log: receives progress messages on rank 0.

    Returns:
        The result dict of `run_experiment` plus "distributed": {...}; the same on every rank except
        "distributed.rank".

    Example:
        >>> result = run_distributed_training(ExperimentConfig(dataset="frappe", data="data/frappe"),
        ...                                   DistributedOptions.parse(sharding="table_wise"))
    """
    options = options or DistributedOptions()
    # everything that can be refused is refused before a process group exists or data is read
    check_experiment(config)
    backend = resolve_backend(options.backend, config.device)
    check_train_config(config.train_config(), "cuda" if backend is Backend.NCCL else "cpu")
    schema = open_source(config.dataset, config.data, **config.dataset_options).schema
    config.check_schema(schema)
    sharing = [f.name for f in schema.categorical if f.share_with is not None]
    if sharing:
        raise ValueError(
            f"--distributed does not shard shared rows (share_with on {sharing}): train without "
            "--distributed, or turn the sharing off (movielens: --dataset-option share_embedding=false)"
        )
    env = init_distributed(backend, config.device)
    say = log if (log is not None and env.is_main) else (lambda _m: None)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()

    def load() -> Any:
        return prepare(
            config.dataset, config.data, config.source_options(), config.cache_dir, config.skip_bad_rows, say
        )

    # the others wait while rank 0 encodes: on a group of their own, with a timeout for that (the
    # default collective timeout, 30 minutes, is shorter than encoding a large dataset)
    waiting = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    data = load() if env.is_main else None
    dist.barrier(group=waiting)
    dist.destroy_process_group(waiting)
    data = data if data is not None else load()
    prepare_seconds = time.perf_counter() - t0
    schema = data.schema
    torch.manual_seed(config.seed)  # as build_experiment_model: the same start as `featmux train`
    draws: list[TableDraw] | None = [] if options.table_init is TableInit.FEATMUX else None
    with tables_on_meta(draws):
        layer = build_embedding(schema.categorical, config.embedding_spec(), data.vocabulary)
    embedding = TorchRecEmbedding(layer, device=torch.device("meta"))
    del layer
    model = build_model(config.model, embedding, len(schema.numeric), config.model_options)
    full = collisionless_parameters(
        schema.categorical, data.vocabulary, config.embedding_dim, config.min_count
    )
    params = embedding.num_parameters()
    say(
        f"{config.embedding} embedding as {len(embedding.tables)} TorchRec table(s), "
        f"{params:,} parameters ({params / full:.4g} x collisionless), "
        f"{env.world_size} rank(s) on {env.backend.value}"
    )
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    on_event = event_logger(say, with_epoch=False)

    def on_any_event(event: dict[str, Any]) -> None:
        on_event(event)
        if event.get("event") == "resumed":
            for message in [*event.get("skipped_damaged", []), *event.get("notes", [])]:
                say(message)
        elif event.get("event") == "nonfinite":
            say(event["message"])

    trainer = DistributedTrainer(
        model, config.train_config(), options.sharding, schema, checkpoint_dir, on_any_event
    )
    if draws is not None:
        embedding.fill_from_draws(draws)  # each rank writes its own shards only
    say("sharding plan:\n" + trainer.plan_report.to_markdown())
    fit = trainer.fit(data.train, data.valid, resume=config.resume)
    test = trainer.evaluate(data.test) if data.test is not None else None
    if checkpoint_dir is not None and options.export:
        trainer.export_model(checkpoint_dir / "model.pt")
    dense = sum(p.numel() for p in trainer.dense_parameters)
    replicated = trainer.data_parallel_tables
    table_optimizer = options.sharding.optimizer.kind.value
    return {
        **experiment_result(config, data, embedding, dense, fit, test, prepare_seconds),
        "losses": fit.losses,
        "distributed": {
            "rank": env.rank,
            "world_size": env.world_size,
            "backend": env.backend.value,
            "device": env.device.type,
            "table_optimizer": table_optimizer,
            "table_learning_rate": options.sharding.optimizer.learning_rate,
            "dense_optimizer": options.sharding.dense_optimizer.value,
            "table_init": options.table_init.value,
            "tables": [t.name for t in embedding.tables],
            "data_parallel_tables": replicated,
            "data_parallel_training": (
                f"{table_optimizer} (the table optimizer, unfused, on the all-reduced gradient)"
                if replicated
                else "none: the planner is offered data_parallel only for tables that ask for it"
            ),
            "plan": trainer.plan_report.to_markdown(),
            "resumed_from_step": fit.resumed_from_step,
            "steps_this_launch": fit.steps_this_launch,
            "skipped_batches": fit.skipped_batches,
            "peak_rss_bytes": _peak_rss_per_rank(),
        },
    }
