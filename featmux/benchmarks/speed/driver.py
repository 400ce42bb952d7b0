"""Runs the parts one after another, each measurement in its own process under the lock; saves the report."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featmux.atomic import write_json_atomic
from featmux.benchmarks.speed.config import SpeedConfig, repo_root
from featmux.benchmarks.speed.contenders import BF16_SUFFIX, all_contenders, peer_names
from featmux.benchmarks.speed.report import ratios, render_markdown, summarise_training
from featmux.benchmarks.speed.timing import gemm_peak_gflops, machine, measurement_lock
from featmux.benchmarks.speed.workloads import encoded_splits, export_frappe, export_synthetic
from featmux.embeddings.base import INIT_STD
from featmux.training.precision import resolve_bf16


def _subprocess(
    argv: list[str], spec: dict[str, Any], work: Path, tag: str, lock: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """Run one measurement process under the lock; its result JSON (or the error) comes back."""
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = runs / f"{tag}.spec.json", runs / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    result_path.unlink(missing_ok=True)
    with measurement_lock(lock) as waited:
        log(f"{tag}: running (waited {waited:.0f}s for the lock, load {os.getloadavg()[0]:.2f})")
        started = time.perf_counter()
        proc = subprocess.run(
            [*argv, str(spec_path), str(result_path)], cwd=repo_root(), capture_output=True, text=True
        )
        wall = time.perf_counter() - started
    if proc.returncode != 0 or not result_path.is_file():
        log(f"{tag}: FAILED ({proc.returncode})\n{proc.stderr[-3000:]}")
        return {"error": proc.stderr[-3000:] or f"exit code {proc.returncode}", "wall_seconds": wall}
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = wall
    result["lock_wait_seconds"] = waited
    return result


def _training_specs(config: SpeedConfig) -> list[tuple[str, dict[str, Any]]]:
    """(tag, spec) of every training run, in order: each contender, then its bf16 run where bf16 is on."""
    contenders = all_contenders()
    bf16 = resolve_bf16(config.bf16).enabled
    specs = []
    for setup in config.datasets:
        for model in config.models:
            base = {
                "dataset": setup.name,
                "model": model,
                "data": str(config.work_dir / setup.name),
                "method": setup.method,
                "embedding_dim": setup.embedding_dim,
                "epochs": setup.epochs,
                "hidden": list(config.hidden),
                "cross_layers": config.cross_layers,
                "batch_size": config.batch_size,
                "learning_rate": config.learning_rate,
                "threads": config.threads,
                "seed": config.seed,
                "init_std": INIT_STD,
                "batch_norm": config.batch_norm,
            }
            for library in config.libraries:
                contender = contenders[library]
                if contender.datasets is not None and setup.name not in contender.datasets:
                    continue
                spec = {**base, "library": library}
                specs.append((f"{setup.name}-{model}-{library}", spec))
                if contender.bf16 and bf16:
                    # the same run under bf16 autocast, right after the float32 one (one A/B per workload)
                    specs.append((f"{setup.name}-{model}-{library}{BF16_SUFFIX}", {**spec, "bf16": True}))
    return specs


def run_speed(config: SpeedConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark parts of `config` one after another; save JSON and Markdown; return the report."""
    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report: dict[str, Any] = {
        "created": created,
        "config": json.loads(json.dumps(asdict(config), default=str)),
    }
    report["machine"] = machine(config.threads, resolve_bf16(config.bf16))
    log(f"bf16 autocast runs: {report['machine']['bf16']} ({report['machine']['bf16_reason']})")
    with measurement_lock(config.lock):
        report["gemm_peak_gflops"] = gemm_peak_gflops(config.threads)
        report["gemm_peak_gflops_bf16"] = gemm_peak_gflops(config.threads, dtype=torch.bfloat16)
    me = [sys.executable, "-m", "featmux.benchmarks.speed"]
    needs_synthetic = "embedding" in config.parts or (
        "training" in config.parts and any(s.name == "synthetic" for s in config.datasets)
    )
    if needs_synthetic:
        export_synthetic(config.synthetic_rows, config.seed, work / "synthetic", log)
    if "training" in config.parts:
        if any(s.name == "frappe" for s in config.datasets):
            export_frappe(config.frappe_dir, work / "frappe", log)
        for setup in config.datasets:
            encoded_splits(work / setup.name)  # featmux's shard cache, written before any timing
        runs = []
        for tag, spec in _training_specs(config):
            library = spec["library"]
            contender = library + (BF16_SUFFIX if spec.get("bf16") else "")
            if library in peer_names():
                if not config.peers_python.exists():
                    runs.append(
                        {
                            **spec,
                            "contender": contender,
                            "error": f"no peers venv at {config.peers_python}: "
                            "run benchmarks/speed/install_peers.sh",
                        }
                    )
                    continue
                argv = [str(config.peers_python), str(repo_root() / "benchmarks" / "speed" / "peers.py")]
            else:
                argv = [*me, "contender"]
            result = _subprocess(argv, spec, work, tag, config.lock, log)
            with np.load(Path(spec["data"]) / "train.npz") as z:
                train_rows = int(z["labels"].shape[0])
            runs.append({**spec, **result, "contender": contender, "train_rows": train_rows})
        report["training_runs"] = runs
        report["training"] = summarise_training(runs)
        report["ratios"] = ratios(report["training"])
    if "embedding" in config.parts:
        spec = {
            "data": str(work / "synthetic"),
            "threads": config.threads,
            "batch_size": config.batch_size,
            "batches": 8,
            "steps": 30,
            "dense_steps": 3,
            "embedding_dim": 16,
        }
        report["embedding"] = _subprocess([*me, "embedding"], spec, work, "embedding", config.lock, log)
    if "pipeline" in config.parts:
        spec = {
            "work": str(work / "pipeline"),
            "rows": config.pipeline_rows,
            "threads": config.threads,
            "batch_size": config.batch_size,
        }
        report["pipeline"] = _subprocess([*me, "pipeline"], spec, work, "pipeline", config.lock, log)
    shared = {"frappe_dir": str(config.frappe_dir.resolve()), "cache_dir": str(work / "cache")}
    shared |= {"threads": config.threads, "repeats": config.repeats}
    if "loop" in config.parts:
        spec = {**shared, "fit_epochs": config.loop_fit_epochs}
        report["loop"] = _subprocess([*me, "loop"], spec, work, "loop", config.lock, log)
    if "inference" in config.parts:
        spec = {**shared, "train_epochs": config.inference_train_epochs, "batch_size": config.batch_size}
        spec["latency_calls"] = config.latency_calls
        report["inference"] = _subprocess([*me, "inference"], spec, work, "inference", config.lock, log)
    report["machine"]["loadavg_end"] = os.getloadavg()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stamp = created.replace(":", "").replace("-", "")
    write_json_atomic(out / f"speed-{stamp}.json", report)
    markdown = render_markdown(report)
    (out / f"speed-{stamp}.md").write_text(markdown + "\n")
    log(markdown)
    return report
