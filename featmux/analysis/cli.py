"""`featmux analyze`: collision statistics, first-layer orthogonality, budget planning.

featmux analyze collisions --dataset frappe --data ../shared/data/frappe --embedding unified --budget 1/16
featmux analyze collisions --config configs/frappe_dcnv2.yaml --embedding hashing --budget 1/64 --slots
featmux analyze orthogonality runs/frappe/model.pt --layer mlp
featmux analyze plan --memory 64MB --embedding-dim 16 --cardinalities cards.yaml --max-chunks 2
featmux analyze plan --memory 1MB --embedding-dim 10 --dataset frappe --data ../shared/data/frappe
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from featmux.analysis.orthogonality import DEFAULT_RANK_TOL, FirstLayer
from featmux.cli.common import EMBEDDING_HELP, config_overrides, console, fail, parse_mapping, say

analyze_app = typer.Typer(
    no_args_is_help=True, help="Analyse embedding layers: collisions, orthogonality, budget plans."
)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _write(path: Path, rows: list[dict[str, Any]] | dict[str, Any]) -> None:
    """JSON, or CSV when the path ends in .csv (rows only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv" and isinstance(rows, list):
        import csv

        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(json.dumps(rows, indent=1, default=str))
    console.print(f"written to {path}")


def _prepare(dataset: str, data: Path | None, options: dict[str, Any], cache_dir: Path | None) -> Any:
    from featmux.data.errors import DataError
    from featmux.data.prepare import prepare

    try:
        return prepare(dataset, data, options, cache_dir, log=say)
    except (DataError, FileNotFoundError, ValueError) as err:
        fail(str(err))


@analyze_app.command("collisions")
def collisions(
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML (as for `featmux train`); flags override it.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Source name (frappe, criteo, synthetic, ...).")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset file or directory.")] = None,
    dataset_option: Annotated[list[str] | None, typer.Option(help="Source option key=value.")] = None,
    embedding: Annotated[str | None, typer.Option(help=EMBEDDING_HELP)] = None,
    budget: Annotated[str | None, typer.Option(help="1/16, 0.25, rows:N or params:N.")] = None,
    embedding_dim: Annotated[int | None, typer.Option(help="D.")] = None,
    num_tables: Annotated[int | None, typer.Option(help="Unified: sub-tables T.")] = None,
    chunks: Annotated[int | None, typer.Option(help="Unified: chunks of every feature.")] = None,
    feature_chunks: Annotated[
        list[str] | None, typer.Option("--feature-chunks", help="Unified: name=K for one feature.")
    ] = None,
    private_max_cardinality: Annotated[int | None, typer.Option(help="Unified: private tables.")] = None,
    min_count: Annotated[int | None, typer.Option(help="Only values seen this often.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Analyse the embedding of this trained model instead.")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Encoded-data cache directory.")] = None,
    slots: Annotated[bool, typer.Option(help="Also show one row per (feature, chunk).")] = False,
    out: Annotated[Path | None, typer.Option(help="Write per-feature rows (.json or .csv).")] = None,
) -> None:
    """Share of values and traffic that collide, per feature, within and across features."""
    from featmux.analysis.collisions import collision_stats
    from featmux.embeddings import build_embedding
    from featmux.training.experiment import ExperimentConfig

    flags = {
        "dataset": dataset,
        "data": data,
        "embedding": embedding,
        "budget": budget,
        "embedding_dim": embedding_dim,
        "num_tables": num_tables,
        "default_chunks": chunks,
        "private_max_cardinality": private_max_cardinality,
        "min_count": min_count,
        "cache_dir": cache_dir,
    }
    overrides = config_overrides(flags, dataset_option)
    if feature_chunks:
        overrides["chunks"] = {
            k: int(v) for k, v in parse_mapping(feature_chunks, "--feature-chunks").items()
        }
    try:
        cfg = ExperimentConfig.from_yaml(config, **overrides) if config else ExperimentConfig(**overrides)
    except (ValidationError, ValueError, OSError) as err:
        fail(f"invalid configuration:\n{err}")
    prepared = _prepare(cfg.dataset, cfg.data, cfg.source_options(), cfg.cache_dir)
    if checkpoint is not None:
        from featmux.training.checkpoint import load_model

        layer = load_model(checkpoint)[0].embedding
    else:
        try:
            layer = build_embedding(prepared.schema.categorical, cfg.embedding_spec(), prepared.vocabulary)
        except ValueError as err:
            fail(str(err))
    try:
        report = collision_stats(layer, prepared.vocabulary, cfg.min_count)
    except (TypeError, KeyError) as err:
        fail(f"cannot analyse this layer on {cfg.dataset}: {err}")
    table = Table(
        title=f"{report.method} on {cfg.dataset}: {layer.num_parameters():,} parameters, "
        f"{report.occupied_rows:,}/{report.rows:,} rows used by {report.occupants:,} occupants"
    )
    columns = ("feature", "table", "K", "values", "values collide", "within", "cross",
               "traffic collide", "within", "cross", "all chunks", "uniform-hash rate")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("feature", "table") else "right")
    for f in report.features:
        table.add_row(
            f.feature, f.table, str(f.chunks), f"{f.values:,}",
            _pct(f.values_any), _pct(f.values_within), _pct(f.values_cross),
            _pct(f.traffic_any), _pct(f.traffic_within), _pct(f.traffic_cross),
            _pct(f.values_all_chunks), _pct(f.expected_any),
        )  # fmt: skip
    Console().print(table)
    if slots:
        slot_table = Table(title="per (feature, chunk)")
        for col in ("slot", "values", "values collide", "within", "cross", "traffic collide", "uniform"):
            slot_table.add_column(col, justify="left" if col == "slot" else "right")
        for s in report.slots:
            slot_table.add_row(
                s.slot, f"{s.values:,}", _pct(s.values_any), _pct(s.values_within), _pct(s.values_cross),
                _pct(s.traffic_any), _pct(s.expected_any),
            )  # fmt: skip
        Console().print(slot_table)
    if out is not None:
        _write(out, report.feature_rows())


@analyze_app.command("orthogonality")
def orthogonality(
    checkpoint: Annotated[Path, typer.Argument(help="A featmux model file (save_model / model.pt).")],
    layer: Annotated[
        FirstLayer, typer.Option(help="auto, mlp (first MLP layer) or cross.")
    ] = FirstLayer.AUTO,
    rank_tol: Annotated[float, typer.Option(help="Relative singular-value cut for the rank.")] = (
        DEFAULT_RANK_TOL
    ),
    top: Annotated[int, typer.Option(help="Most overlapping pairs shown.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Write all pairs (.json or .csv).")] = None,
) -> None:
    """Principal angles between features' first-layer weight blocks (0: orthogonal, 1: identical)."""
    from featmux.analysis.orthogonality import checkpoint_orthogonality
    from featmux.training.checkpoint import CheckpointError

    try:
        report = checkpoint_orthogonality(checkpoint, layer, rank_tol)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    console.print(
        f"{len(report.features)} features, first layer {report.out_dim} wide: mean cos^2 of principal "
        f"angles {report.mean_score:.4f} (random subspaces of the same ranks: {report.mean_baseline:.4f})"
    )
    features = Table(title="per feature")
    for col in ("feature", "rank", "mean score", "random baseline"):
        features.add_column(col, justify="left" if col == "feature" else "right")
    for row in report.feature_rows():
        features.add_row(
            row["feature"], str(row["rank"]), f"{row['mean_score']:.4f}", f"{row['mean_baseline']:.4f}"
        )
    Console().print(features)
    pairs = Table(title=f"most overlapping pairs (top {top})")
    for col in ("feature", "other", "score", "baseline", "min angle", "mean angle"):
        pairs.add_column(col, justify="left" if col in ("feature", "other") else "right")
    for p in report.pairs()[:top]:
        pairs.add_row(
            p["feature"], p["other"], f"{p['score']:.4f}", f"{p['baseline']:.4f}",
            f"{p['min_angle_deg']:.1f}°", f"{p['mean_angle_deg']:.1f}°",
        )  # fmt: skip
    Console().print(pairs)
    if out is not None:
        _write(out, report.pairs())


def _loadparse_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        fail(f"cannot read {what} {path}: {err}")
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of feature name -> {what}")
    return data


@analyze_app.command("plan")
def plan(
    memory: Annotated[str, typer.Option(help="Memory budget: 64MB, 64MiB, 1.5GB (plain number: MB).")],
    embedding_dim: Annotated[int, typer.Option(help="D, width of one chunk.")],
    cardinalities: Annotated[
        Path | None, typer.Option(help="YAML/JSON mapping feature -> number of values.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Or take them from a dataset's vocabulary.")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset file or directory.")] = None,
    dataset_option: Annotated[list[str] | None, typer.Option(help="Source option key=value.")] = None,
    min_count: Annotated[int, typer.Option(help="Count values seen at least this often.")] = 1,
    cache_dir: Annotated[Path | None, typer.Option(help="Encoded-data cache directory.")] = None,
    bytes_per_param: Annotated[int, typer.Option(help="4 for float32, 2 for 16-bit.")] = 4,
    max_chunks: Annotated[int, typer.Option(help="Most chunks per feature (1: no multi-probe).")] = 1,
    max_slots: Annotated[int | None, typer.Option(help="Cap on slots (model input width / D).")] = None,
    num_tables: Annotated[int | None, typer.Option(help="Sub-tables T.")] = None,
    max_table_rows: Annotated[int | None, typer.Option(help="Largest sub-table (sets T).")] = None,
    private_max_cardinality: Annotated[int, typer.Option(help="Private tables up to this size.")] = 0,
    importance: Annotated[
        Path | None, typer.Option(help="YAML/JSON feature -> weight (default: cardinality).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the whole plan as JSON.")] = None,
) -> None:
    """Propose a Unified Embedding layer for a memory budget, with expected collision rates."""
    from featmux.analysis.planner import PlannerConfig, parse_memory, plan_summary, plan_unified

    counts = None
    if cardinalities is not None:
        cards = {str(k): int(v) for k, v in _loadparse_mapping(cardinalities, "cardinality").items()}
    elif dataset is not None:
        prepared = _prepare(dataset, data, parse_mapping(dataset_option, "--dataset-option"), cache_dir)
        vocab = prepared.vocabulary
        cards = vocab.cardinalities(min_count)
        counts = {n: vocab[n].counts[vocab[n].counts >= min_count] for n in cards}
    else:
        fail("give --cardinalities FILE or --dataset (and --data)")
    weights = None
    if importance is not None:
        weights = {str(k): float(v) for k, v in _loadparse_mapping(importance, "importance").items()}
    try:
        config = PlannerConfig(
            budget_bytes=parse_memory(memory),
            embedding_dim=embedding_dim,
            bytes_per_param=bytes_per_param,
            max_chunks=max_chunks,
            max_slots=max_slots,
            num_tables=num_tables,
            max_table_rows=max_table_rows,
            private_max_cardinality=private_max_cardinality,
        )
        result = plan_unified(cards, config, weights, counts)
    except ValueError as err:
        fail(str(err))
    console.print(
        f"budget {config.budget_bytes:,} bytes -> {result.parameters:,} parameters "
        f"({result.memory_bytes:,} bytes with buffers): {result.shared_rows:,} shared rows in "
        f"{result.num_tables} sub-table(s), {len(result.private)} private table(s), {result.num_slots} slots "
        f"(model input {result.output_dim} wide)"
    )
    console.print(
        f"share of values whose every probe collides: unified {_pct(result.objective)}, "
        f"per-feature hashing at the same size {_pct(result.hashing_objective)} (importance-weighted)"
    )
    table = Table(title="per feature (expected under uniform hashing)")
    columns = ("feature", "values", "K", "tables", "collide", "within", "cross", "all chunks",
               "same embedding", "hashing rows", "hashing collide")  # fmt: skip
    foreign = counts is not None
    for col in (*columns, *(("foreign share", "hashing foreign") if foreign else ())):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for f in result.features:
        cells = [
            f.name, f"{f.cardinality:,}", "private" if f.private else str(f.chunks),
            ",".join(map(str, f.tables)), _pct(f.collision), _pct(f.within), _pct(f.cross),
            _pct(f.all_chunks), _pct(f.indistinguishable), f"{f.hashing_rows:,}", _pct(f.hashing_collision),
        ]  # fmt: skip
        if foreign:
            cells += [_pct(f.foreign_share), _pct(f.hashing_foreign_share)]
        table.add_row(*cells)
    Console().print(table)
    tables = Table(title="sub-tables")
    for col in ("table", "rows", "slots", "occupants", "load"):
        tables.add_column(col, justify="right")
    for t in result.tables:
        tables.add_row(str(t.index), f"{t.rows:,}", str(t.slots), f"{t.occupants:,}", f"{t.load:.3f}")
    Console().print(tables)
    console.print("ExperimentConfig keys for this layer:")
    Console().print(yaml.safe_dump(result.experiment_options(), sort_keys=False).rstrip())
    if out is not None:
        _write(out, plan_summary(result))
