"""`featmux export`, `featmux score` and `featmux serve`: from a trained run to scores.

featmux export runs/frappe --out artefacts/frappe [--precision fp16|int8|int4] [--onnx]
featmux score artefacts/frappe data.csv --out scores.csv
featmux score artefacts/frappe ../shared/data/frappe/frappe.test.libfm --dataset frappe --out scores.csv
featmux serve artefacts/frappe --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from featmux.cli.common import choice_option, console, fail, parse_mapping
from featmux.data.errors import DataError

# torch and the serving modules are imported inside the commands: `featmux --help` stays fast

CHECKPOINT_HINT = "a --checkpoint-dir of `featmux train` (model.pt or best.pt), or a checkpoint file"


def _load(path: Path, backend: str | None = None):  # -> Predictor
    from featmux.serving import ArtefactError, load
    from featmux.training.checkpoint import CheckpointError

    try:
        return load(path, backend)
    except (ArtefactError, CheckpointError, FileNotFoundError, ValueError) as err:
        fail(str(err))


def export_command(
    run: Annotated[Path, typer.Argument(help=f"The trained model: {CHECKPOINT_HINT}.")],
    out: Annotated[Path, typer.Option(help="The artefact directory to write.")],
    precision: Annotated[
        Any,
        choice_option(
            "featmux.embeddings.precision:Precision",
            "Embedding tables: as trained (default), or quantized row-wise to fp16, int8 or int4.",
            "PRECISION",
        ),
    ] = None,
    onnx: Annotated[bool, typer.Option(help="Also export ONNX and check it with onnxruntime.")] = False,
) -> None:
    """Export a trained model: safetensors weights, JSON rules and a torch.export program."""
    from featmux.embeddings.precision import Precision
    from featmux.serving.artefact import ONNX_FILE
    from featmux.serving.export import export_model
    from featmux.serving.predictor import checkpoint_file
    from featmux.training.checkpoint import CheckpointError, load_model

    try:
        source = checkpoint_file(run)
        model, schema = load_model(source)
    except (CheckpointError, FileNotFoundError) as err:
        fail(str(err))
    if onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            fail("--onnx needs onnxruntime (install with: bash scripts/install.sh --serving)")
    precision = precision or Precision.FP32
    try:
        summary = export_model(model, schema, out, precision, onnx=onnx, source={"checkpoint": str(source)})
    except ValueError as err:  # a precision the method cannot take
        fail(str(err))
    table = Table(title=f"featmux export: {out} ({summary.precision.value})")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for name, size in summary.files.items():
        table.add_row(name, f"{size:,}")
    Console().print(table)
    if summary.onnx_max_abs_diff is not None:
        console.print(f"onnxruntime vs program: max |logit difference| {summary.onnx_max_abs_diff:.3g}")
    if summary.onnx_error is not None:
        fail(f"ONNX export failed ({summary.onnx_error}); the artefact was written without {ONNX_FILE}")


def score_command(
    artefact: Annotated[Path, typer.Argument(help=f"An artefact of `featmux export`, or {CHECKPOINT_HINT}.")],
    data: Annotated[Path, typer.Argument(help="The rows to score: CSV/Parquet, or a --dataset file.")],
    out: Annotated[Path, typer.Option(help="Scores, one per input row: CSV, or Parquet (*.parquet).")],
    dataset: Annotated[
        str | None, typer.Option(help="Read DATA as this dataset format (frappe, criteo, avazu, movielens).")
    ] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option(help="key=value: a table's separator/header/names/encoding, or source options; split."),
    ] = None,
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Skip and count malformed rows (their score is empty) instead of stopping.")
    ] = False,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows scored at a time.")] = 65_536,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    backend: Annotated[
        str | None, typer.Option(help="eager or program (artefacts: default program, slower to load).")
    ] = None,
) -> None:
    """Score a file, streamed: one score per input row, in input order."""
    import torch

    from featmux.serving.scorer import score_file

    if threads is not None:
        torch.set_num_threads(threads)
    predictor = _load(artefact, backend)
    options = parse_mapping(dataset_option, "--dataset-option")
    try:
        summary = score_file(
            predictor,
            data,
            out,
            dataset,
            options,
            skip_bad_rows,
            chunk_rows,
            progress=progress and sys.stderr.isatty(),
        )
    except DataError as err:
        fail(f"bad input data: {err}\n(use --skip-bad-rows to skip and count malformed rows)")
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    console.print(
        f"scored {summary.scored:,} of {summary.rows:,} rows in {summary.seconds:.2f} s "
        f"({summary.rows_per_second:,.0f} rows/s) into {out}"
    )
    if summary.skipped:
        console.print(summary.bad_rows + "\n(skipped rows have an empty score)")


def serve_command(
    artefact: Annotated[Path, typer.Argument(help=f"An artefact of `featmux export`, or {CHECKPOINT_HINT}.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    max_batch: Annotated[int, typer.Option(min=1, help="Rows of one forward pass at most.")] = 4096,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="Wait this long for more requests to batch with the first.")
    ] = 0.0,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    backend: Annotated[
        str | None, typer.Option(help="eager or program (artefacts: default program).")
    ] = None,
) -> None:
    """Serve the model over HTTP: POST /predict {"instances": [...]} -> {"predictions": [...]}."""
    try:
        import uvicorn

        from featmux.serving.server import ServerConfig, create_app
    except ImportError as err:
        fail(f"{err}\n(install the server with: bash scripts/install.sh --serving)")
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    app = create_app(_load(artefact, backend), ServerConfig(max_batch, max_wait_ms))
    logging.basicConfig(level=logging.INFO, format="featmux serve: %(message)s", stream=sys.stderr)
    console.print(f"featmux serve: {artefact} on http://{host}:{port} (docs at /docs)")
    # SIGINT/SIGTERM: stop accepting, finish requests in flight (10 s at most), drain the queue; uvicorn
    # then re-raises the signal, so the exit status is the signal's (-15 / 143 for SIGTERM)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)


def register(app: typer.Typer) -> None:
    """Add the serving commands to the `featmux` app."""
    app.command("export")(export_command)
    app.command("score")(score_command)
    app.command("serve")(serve_command)
