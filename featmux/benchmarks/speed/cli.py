"""The command line: `featmux bench speed` and `python -m featmux.benchmarks.speed`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from featmux.benchmarks.speed.config import DEFAULT_LOCK, DatasetSetup, SpeedConfig
from featmux.benchmarks.speed.contenders import all_contenders, run_contender
from featmux.benchmarks.speed.driver import run_speed
from featmux.benchmarks.speed.embedding import run_embedding_bench
from featmux.benchmarks.speed.inference import run_inference_bench
from featmux.benchmarks.speed.loop import run_loop_bench
from featmux.benchmarks.speed.pipeline import run_pipeline_bench
from featmux.cli.common import fail


def speed_command(
    part: Annotated[
        list[str] | None,
        typer.Option(help="training, embedding, pipeline, loop, inference (repeatable; default all)."),
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="synthetic, frappe (repeatable; default both).")
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="deepfm, dcnv2 (repeatable; default both).")] = None,
    library: Annotated[
        list[str] | None,
        typer.Option(help="featmux, plain, deepctr, rechub, featmux-dense-adam (repeatable; default all)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where results go.")] = Path("benchmarks/results"),
    work: Annotated[Path, typer.Option(help="Exported arrays, caches, generated files.")] = Path("out/speed"),
    frappe_dir: Annotated[Path, typer.Option(help="Frappe libFM files.")] = Path("../shared/data/frappe"),
    synthetic_train_rows: Annotated[int, typer.Option(help="Synthetic training rows.")] = 600_000,
    synthetic_epochs: Annotated[int, typer.Option()] = 2,
    frappe_epochs: Annotated[int, typer.Option()] = 8,
    pipeline_rows: Annotated[int, typer.Option(help="Rows of the generated Criteo/Avazu files.")] = 1_000_000,
    threads: Annotated[int, typer.Option(help="torch threads of every contender.")] = 2,
    loop_fit_epochs: Annotated[int, typer.Option(help="Loop part: epochs of each whole fit.")] = 2,
    repeats: Annotated[int, typer.Option(help="Loop and inference parts: interleaved repeats.")] = 2,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="Also run each contender under bf16 autocast (default: where the CPU has it natively).",
        ),
    ] = None,
    batch_norm: Annotated[
        bool, typer.Option(help="Batch norm in every MLP (torch-rechub always has it).")
    ] = False,
    lock: Annotated[str, typer.Option(help="Measurement lock file ('' for none).")] = str(DEFAULT_LOCK),
    peers_python: Annotated[Path | None, typer.Option(help="Python of the peers' venv.")] = None,
) -> None:
    """featmux against DeepCTR-Torch, torch-rechub, plain PyTorch and TorchRec: one run, one ratio table."""
    datasets = {
        "synthetic": DatasetSetup("synthetic", 16, synthetic_epochs, "unified"),
        "frappe": DatasetSetup("frappe", 10, frappe_epochs, "collisionless"),
    }
    known = all_contenders()
    for name, choices, allowed in (
        ("--library", library or (), known),
        ("--dataset", dataset or (), datasets),
        ("--model", model or (), ("deepfm", "dcnv2")),
    ):
        unknown = [c for c in choices if c not in allowed]
        if unknown:
            fail(f"unknown {name} {', '.join(unknown)} (choose from {', '.join(allowed)})")
    chosen = tuple(datasets[d] for d in (dataset or ["synthetic", "frappe"]))
    held_out = max(10_000, synthetic_train_rows // 6)
    config = SpeedConfig(
        out_dir=out,
        work_dir=work,
        parts=tuple(part or ("training", "embedding", "pipeline", "loop", "inference")),
        datasets=chosen,
        models=tuple(model or ("deepfm", "dcnv2")),
        libraries=tuple(library or SpeedConfig.libraries),
        frappe_dir=frappe_dir,
        synthetic_rows=(synthetic_train_rows, held_out, held_out),
        threads=threads,
        bf16=bf16,
        batch_norm=batch_norm,
        pipeline_rows=pipeline_rows,
        loop_fit_epochs=loop_fit_epochs,
        repeats=repeats,
        lock=Path(lock) if lock else None,
        **({"peers_python": peers_python} if peers_python is not None else {}),
    )
    run_speed(config, log=lambda msg: print(msg, file=sys.stderr, flush=True))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m featmux.benchmarks.speed [PART SPEC RESULT | options]`: a part's process, or the command."""
    args = list(sys.argv[1:] if argv is None else argv)
    entries = {
        "contender": run_contender,
        "embedding": run_embedding_bench,
        "pipeline": run_pipeline_bench,
        "loop": run_loop_bench,
        "inference": run_inference_bench,
    }
    if args and args[0] in entries:
        entries[args[0]](Path(args[1]), Path(args[2]))
        return
    app = typer.Typer(add_completion=False)
    app.command()(speed_command)
    app(args)


if __name__ == "__main__":
    main()
