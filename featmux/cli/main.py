"""The `featmux` command line.

featmux train                                   # built-in synthetic CTR data, unified embedding
featmux train --dataset frappe --data ../shared/data/frappe --embedding hashing --budget 1/16
featmux train --config configs/frappe_dcnv2.yaml --seed 2 --out result.json
featmux train --dataset frappe --data ../shared/data/frappe --model finalmlp  # configs/frappe_finalmlp.yaml
featmux data inspect ../shared/data/frappe --dataset frappe
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from featmux.cli import preset as presets
from featmux.cli.common import (
    BUDGET_HELP,
    EMBEDDING_HELP,
    choice_option,
    config_overrides,
    fail,
    parse_mapping,
    say,
    validation_message,
)
from featmux.cli.serving import register as register_serving

# sub-command groups imported only when they run: `featmux --help` loads neither torch nor scikit-learn
_LAZY_GROUPS = {
    "analyze": "Analyse embedding layers: collisions, orthogonality, budget plans.",
    "bench": "Benchmark grids: budget-vs-AUC Pareto studies.",
}


@functools.cache
def _lazy_group(name: str) -> TyperGroup:
    if name == "analyze":
        from featmux.analysis.cli import analyze_app

        return typer.main.get_group(analyze_app)
    from featmux.benchmarks.cli import bench_app
    from featmux.benchmarks.speed import speed_command

    bench_app.command("speed")(speed_command)
    return typer.main.get_group(bench_app)


class _LazyGroup(TyperGroup):
    """The top-level group: `bench` and `analyze` are listed by name and help, imported when invoked."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *_LAZY_GROUPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in _LAZY_GROUPS:  # a stand-in for the help listing; `resolve_command` loads the real one
            return TyperGroup(name=cmd_name, help=_LAZY_GROUPS[cmd_name])
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name in _LAZY_GROUPS:
            cmd = _lazy_group(name)
        return name, cmd, rest


app = typer.Typer(
    cls=_LazyGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Memory-efficient categorical embeddings for CTR models.",
)
data_app = typer.Typer(no_args_is_help=True, help="Look at datasets.")
app.add_typer(data_app, name="data")
register_serving(app)  # export, score, serve


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option(help="YAML file of experiment options; flags override it.")
    ] = None,
    preset: Annotated[
        bool, typer.Option(help="Without --config, start from configs/<dataset>_<model>.yaml if it exists.")
    ] = True,
    dataset: Annotated[
        str | None, typer.Option(help="frappe, movielens, criteo, avazu, csv or synthetic.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset file or directory.")] = None,
    dataset_option: Annotated[
        list[str] | None, typer.Option(help="Source option key=value (repeatable).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="lr, fm, deepfm, wdl, dcn, dcnv2, dlrm, xdeepfm, autoint, finalmlp, finalnet, din."
        ),
    ] = None,
    model_option: Annotated[
        list[str] | None, typer.Option(help="Model option key=value, e.g. hidden=[400,400].")
    ] = None,
    embedding: Annotated[str | None, typer.Option(help=EMBEDDING_HELP)] = None,
    budget: Annotated[str | None, typer.Option(help=BUDGET_HELP)] = None,
    embedding_option: Annotated[
        list[str] | None, typer.Option(help="Embedding method option key=value, e.g. num_tables=2.")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Tables served at fp16, int8 or int4 (quantized after training). The budget sizes the "
            "fp32 tables, so fewer bytes are served than budgeted (unified's qat_bits instead sizes the "
            "rows from the served bytes)."
        ),
    ] = None,
    prune: Annotated[
        float | None, typer.Option(help="Drop this share of table entries after training, store sparse.")
    ] = None,
    prune_method: Annotated[
        Any,
        choice_option(
            "featmux.embeddings.pruning:PruneMethod",
            "With --prune: magnitude (after training) or pep (learned thresholds, then a cut to S).",
            "METHOD",
        ),
    ] = None,
    pep_init: Annotated[
        float | None, typer.Option(help="With --prune-method pep: initial threshold logit s.")
    ] = None,
    qat: Annotated[
        bool,
        typer.Option(
            help="With --precision int8/int4: quantization-aware training of the tables the budget sized "
            "at fp32 (same rows, fewer bytes served). --embedding unified --embedding-option qat_bits=8|4 "
            "instead spends the saved bytes on more rows."
        ),
    ] = False,
    embedding_dim: Annotated[int | None, typer.Option(help="Width D of one slot.")] = None,
    num_tables: Annotated[int | None, typer.Option(help="Unified: sub-tables T.")] = None,
    chunks: Annotated[
        str | None, typer.Option(help="Unified: chunks (probes) per feature, or auto (chosen per feature).")
    ] = None,
    private_max_cardinality: Annotated[
        int | None, typer.Option(help="Unified: private tables up to this size.")
    ] = None,
    min_count: Annotated[
        int | None, typer.Option(help="Values seen fewer times are out of vocabulary.")
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    embedding_l2: Annotated[float | None, typer.Option(help="L2 on embedding rows.")] = None,
    optimizer: Annotated[
        Any,
        choice_option("featmux.training.config:OptimizerKind", "adam, sparse_adam or row_adam.", "OPTIMIZER"),
    ] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    device: Annotated[str | None, typer.Option(help="Train on this device: cpu or cuda.")] = None,
    bf16: Annotated[
        bool | None,
        typer.Option("--bf16/--no-bf16", help="bf16 autocast (default: on where the device has native bf16)"),
    ] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Resumable checkpoints go here.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Encoded-data cache (default ~/.cache/featmux).")
    ] = None,
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Skip and count malformed rows instead of stopping.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    distributed: Annotated[
        bool, typer.Option(help="Shard the tables with TorchRec; launch with torchrun (needs --torchrec).")
    ] = False,
    sharding: Annotated[
        str | None,
        typer.Option(help="Distributed: sharding types for every table, e.g. table_wise,column_wise."),
    ] = None,
    shard_table: Annotated[
        list[str] | None, typer.Option(help="Distributed: per-table constraint, e.g. unified_t0=row_wise.")
    ] = None,
    table_optimizer: Annotated[
        str,
        typer.Option(help="Distributed: fused table optimizer (sgd, adagrad, rowwise_adagrad; adam on GPU)."),
    ] = "adagrad",
    table_learning_rate: Annotated[float, typer.Option(help="Distributed: table learning rate.")] = 0.01,
    backend: Annotated[
        str | None, typer.Option(help="Distributed: auto (follows --device), gloo (cpu) or nccl (cuda).")
    ] = None,
    table_init: Annotated[
        str | None,
        typer.Option(help="Distributed: featmux (one process's start) or shard (each rank draws its own)."),
    ] = None,
    column_shard_width: Annotated[
        int | None, typer.Option(help="Distributed: columns per column-wise shard (a multiple of 4).")
    ] = None,
    online: Annotated[
        bool, typer.Option(help="Online training over time-ordered partitions, progressive validation.")
    ] = False,
    partition_rows: Annotated[int | None, typer.Option(help="Online: cut the stream every N rows.")] = None,
    partition_column: Annotated[
        str | None, typer.Option(help="Online: a new partition wherever this column's value changes.")
    ] = None,
    partitions: Annotated[int | None, typer.Option(help="Online: stop after this many partitions.")] = None,
    vocabulary_partitions: Annotated[
        int | None, typer.Option(help="Online: collisionless vocabulary frozen after this many partitions.")
    ] = None,
    passes: Annotated[int | None, typer.Option(help="Online: training passes over each partition.")] = None,
    resume: Annotated[
        bool | None,
        typer.Option(
            help="Continue the run in --checkpoint-dir (default: batch runs resume, online runs do not); "
            "--no-resume starts over, replacing the checkpoints there."
        ),
    ] = None,
    checkpoint_every_steps: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    on_nonfinite: Annotated[
        Any,
        choice_option(
            "featmux.training.config:NonFinitePolicy",
            "A NaN/Inf loss stops the run, or skips its batch.",
            "stop|skip",
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Online: save the AUC-per-partition plot here (PNG).")
    ] = None,
) -> None:
    """Train and evaluate a CTR model; prints a results table.

    With --distributed, run under torchrun, e.g.
    `torchrun --nproc-per-node 2 $(which featmux) train --distributed --sharding column_wise ...`.
    """
    from featmux.data.errors import DataError
    from featmux.training.experiment import ExperimentConfig, run_experiment

    flags: dict[str, Any] = {
        "dataset": dataset,
        "data": data,
        "model": model,
        "embedding": embedding,
        "budget": budget,
        "embedding_dim": embedding_dim,
        "precision": precision,
        "prune": prune,
        "prune_method": prune_method,
        "pep_init": pep_init,
        "num_tables": num_tables,
        "default_chunks": chunks,
        "private_max_cardinality": private_max_cardinality,
        "min_count": min_count,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "embedding_l2": embedding_l2,
        "optimizer": optimizer,
        "max_steps": max_steps,
        "seed": seed,
        "threads": threads,
        "device": device,
        "bf16": bf16,
        "checkpoint_dir": checkpoint_dir,
        "cache_dir": cache_dir,
    }
    overrides = config_overrides(flags, dataset_option)
    if model_option:
        overrides["model_options"] = parse_mapping(model_option, "--model-option")
    if embedding_option:
        overrides["embedding_options"] = parse_mapping(embedding_option, "--embedding-option")
    overrides["skip_bad_rows"] = skip_bad_rows
    if qat:
        overrides["qat"] = True
    extra = {"checkpoint_every_steps": checkpoint_every_steps, "on_nonfinite": on_nonfinite}
    overrides |= {k: v for k, v in extra.items() if v is not None}
    if online:
        stream = {
            "partition_rows": partition_rows,
            "partition_column": partition_column,
            "partitions": partitions,
            "vocabulary_partitions": vocabulary_partitions,
            "passes": passes,
        }
        overrides |= {k: v for k, v in stream.items() if v is not None} | {"resume": bool(resume)}
        _train_online(config, overrides, out, plot)
        return
    overrides["progress"] = progress and sys.stderr.isatty()
    if resume is not None:
        overrides["resume"] = resume
    if config is None and preset:
        config = _preset(dataset, model)
    cfg = _load_config(ExperimentConfig, config, overrides)
    dist_flags = {
        "--sharding": sharding,
        "--shard-table": shard_table,
        "--backend": backend,
        "--table-init": table_init,
        "--column-shard-width": column_shard_width,
    }
    given = [flag for flag, value in dist_flags.items() if value]
    if given and not distributed:
        fail(f"{', '.join(given)} apply only with --distributed")
    from featmux.training.checkpoint import CheckpointError
    from featmux.training.trainer import NonFiniteLossError

    try:
        if distributed:
            options = _distributed_options(
                sharding,
                shard_table or [],
                table_optimizer,
                table_learning_rate,
                backend or "auto",
                table_init or "featmux",
                column_shard_width,
            )
            result = _run_distributed(cfg, options)
        else:
            result = run_experiment(cfg, log=say)
    except DataError as err:
        fail(_bad_data(err, skip_bad_rows))
    except (CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    if distributed and result.get("distributed", {}).get("rank", 0) != 0:
        return  # every rank has the same result; rank 0 reports it
    _print_result(result)
    _write_out(out, result)


def _load_config(cls: Any, path: Path | None, overrides: dict[str, Any]) -> Any:
    """The run config from `path` (YAML) and the flags; any problem ends in one `error:` line."""
    try:
        return cls.from_yaml(path, **overrides) if path is not None else cls(**overrides)
    except ValidationError as err:
        fail("invalid configuration:\n" + validation_message(err))
    except (ValueError, OSError) as err:  # a malformed or missing YAML file included
        fail(f"invalid configuration: {err}")


def _bad_data(err: Exception, skipping: bool) -> str:
    """The message for a `DataError`; the flag is suggested only when it was not given."""
    if skipping:  # a problem no row skip can fix (e.g. a file with no rows)
        return f"bad input data: {err}"
    return f"bad input data: {err}\n(use --skip-bad-rows to skip and count malformed rows)"


def _write_out(out: Path | None, result: dict[str, Any]) -> None:
    """Write the results JSON atomically (a killed run never leaves a half-written file)."""
    if out is None:
        return
    from featmux.atomic import write_json_atomic

    write_json_atomic(out, result)
    say(f"results written to {out}")


def _preset(dataset: str | None, model: str | None) -> Path | None:
    """The tuned preset of this dataset and model (defaults where not given), announced when found."""
    from featmux.training.experiment import ExperimentConfig

    fields = ExperimentConfig.model_fields
    found = presets.find_preset(dataset or fields["dataset"].default, model or fields["model"].default)
    if found is not None:
        say(f"starting from the tuned preset {found} (flags override it; --no-preset: without it)")
    return found


def _train_online(
    config: Path | None, overrides: dict[str, Any], out: Path | None, plot: Path | None
) -> None:
    from featmux.data.errors import DataError
    from featmux.training.checkpoint import CheckpointError
    from featmux.training.online import OnlineConfig, plot_progressive, progressive_table, run_online
    from featmux.training.trainer import NonFiniteLossError

    batch_only = sorted(set(overrides) - set(OnlineConfig.model_fields))
    if batch_only:
        flags = ", ".join("--" + k.replace("_", "-") for k in batch_only)
        fail(f"{flags} do(es) not apply to --online (online runs use --passes and --partitions)")
    cfg = _load_config(OnlineConfig, config, overrides)
    try:
        result = run_online(cfg, log=say)
    except DataError as err:
        fail(_bad_data(err, cfg.skip_bad_rows))
    except (CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    Console().print(progressive_table([result]))
    if plot is not None:
        plot_progressive([result], plot, f"progressive validation: {cfg.embedding} on {cfg.dataset}")
        say(f"plot written to {plot}")
    _write_out(out, result.as_dict())


def _distributed_options(
    sharding: str | None,
    shard_table: list[str],
    table_optimizer: str,
    table_learning_rate: float,
    backend: str,
    table_init: str,
    column_shard_width: int | None,
) -> Any:
    try:
        from featmux.distributed import DistributedOptions
    except ImportError as err:
        fail(f"{err}\n(install TorchRec with: bash scripts/install.sh --torchrec)")
    return DistributedOptions.parse(
        sharding=sharding,
        shard_table=shard_table,
        table_optimizer=table_optimizer,
        table_learning_rate=table_learning_rate,
        backend=backend,
        table_init=table_init,
        column_shard_width=column_shard_width,
    )


def _run_distributed(cfg: Any, options: Any) -> dict[str, Any]:
    from featmux.distributed import run_distributed_training

    return run_distributed_training(cfg, options, log=say)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.5f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _print_result(result: dict[str, Any]) -> None:
    table = Table(title=f"featmux: {result['model']} + {result['embedding']} on {result['dataset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = [
        "test_auc",
        "test_logloss",
        "valid_auc",
        "embedding_params",
        "budget_fraction",
        "bytes_fraction",
        "embedding_bytes",
        "dense_params",
        "train_seconds",
        "samples_per_second",
        "steps",
        "epochs",
    ]
    for key in keys:
        table.add_row(key, _fmt(result.get(key)))
    if result.get("inference"):
        inference = result["inference"]
        table.add_row(f"inference ms / {inference['rows']} rows", f"{inference['median_ms']:.2f}")
    if "autocast" in result:
        table.add_row("bf16 autocast", "on" if result["autocast"]["bf16"] else "off")
    Console().print(table)


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path | None, typer.Argument(help="Dataset file or directory.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="frappe, movielens, criteo, avazu, csv or synthetic (default: detected from the path)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "train",
    top: Annotated[int, typer.Option(help="Most frequent values shown per feature.")] = 5,
    max_rows: Annotated[int | None, typer.Option(help="Stop after this many rows.")] = None,
    dataset_option: Annotated[list[str] | None, typer.Option(help="Source option key=value.")] = None,
) -> None:
    """Per-feature cardinalities, missing counts and most frequent values of a dataset split.

    Without --dataset the dataset is detected from the path; a CSV or Parquet table without a declared
    label gets its columns inferred (printed, to reuse as --dataset-option flags). The title says where
    the split's rows come from (its own file, or a share carved from one).
    """
    from featmux.data.detect import detect_source, infer_table_options
    from featmux.data.errors import DataError
    from featmux.data.inspect import inspect_source
    from featmux.data.sources import open_source

    options = parse_mapping(dataset_option, "--dataset-option")
    try:
        if dataset is None:
            dataset = "synthetic" if path is None else detect_source(path)
            say(f"detected dataset: {dataset} (override with --dataset)")
        if dataset == "csv" and path is not None and "categorical" not in options:
            inferred = infer_table_options(path, options.get("separator", ","), options.get("label"))
            options = {**inferred, **options}
            say("inferred columns: " + ", ".join(f"{k}={v}" for k, v in inferred.items() if v))
        source = open_source(dataset, path, **options)
        summaries = inspect_source(source, split=split, top=top, max_rows=max_rows)
    except (DataError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    origin = source.origins.get(split, str(path or ""))
    shown = f"first {summaries[0].rows:,} rows" if max_rows is not None else f"{summaries[0].rows:,} rows"
    table = Table(title=f"{dataset} {split} split: {origin} ({shown})")
    for col in ("column", "kind", "distinct", "missing", "top values (count) / range"):
        table.add_column(col, overflow="fold")
    for s in summaries:
        if s.top:
            detail = ", ".join(f"{v} ({n:,})" for v, n in s.top)
        else:
            detail = f"min {_fmt(s.minimum)}, max {_fmt(s.maximum)}, mean {_fmt(s.mean)}"
        distinct = "" if s.distinct is None else f"{s.distinct:,}"
        table.add_row(s.name, s.kind.value, distinct, f"{s.missing:,}", detail)
    Console().print(table)


if __name__ == "__main__":
    app()
