"""Part `inference`: scoring throughput at batch 4096 and latency at batch 1, float32 and bf16.

The Frappe BARS DCN-v2 model (`configs/frappe_dcnv2.yaml`) is trained for `train_epochs` epochs (a
cap, not converged: the point is realistic weights, not the AUC), then scores the test split in eval
mode under `torch.inference_mode`, with and without bf16 autocast, variants interleaved and repeated.
Batches are built beforehand: the numbers are the model's, not the data path's. Latency is the wall
time of one `model(...)` call on one row, over `latency_calls` calls after a warm-up.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featmux.atomic import write_json_atomic
from featmux.benchmarks.speed.workloads import bars_setup
from featmux.data.cache import Batch
from featmux.models import CTRModel
from featmux.training.experiment import build_experiment_model
from featmux.training.metrics import binary_metrics
from featmux.training.trainer import Trainer


@torch.inference_mode()
def score(model: CTRModel, batches: list[Batch], bf16: bool) -> np.ndarray:
    """Logits of `batches` in eval mode, under bf16 autocast or not, as float32 numpy."""
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return torch.cat([model(b.sparse, b.dense).float() for b in batches]).numpy()


def latencies_ms(model: CTRModel, rows: list[Batch], bf16: bool) -> np.ndarray:
    """Milliseconds of each single-row call, in eval mode."""
    model.eval()
    out = np.empty(len(rows))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for b in rows[:20]:  # warm-up
            model(b.sparse, b.dense)
        for i, b in enumerate(rows):
            start = time.perf_counter()
            model(b.sparse, b.dense)
            out[i] = (time.perf_counter() - start) * 1e3
    return out


def run_inference_bench(spec_path: Path, result_path: Path) -> None:
    """Entry of the inference process (see the module docstring)."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    config, data = bars_setup(Path(spec["frappe_dir"]), Path(spec["cache_dir"]), spec["threads"])
    assert data.test is not None
    model = build_experiment_model(config, data)
    epochs = spec["train_epochs"]
    options = replace(config.train_config(), epochs=epochs, patience=epochs + 1, autocast_bf16=False)
    Trainer(model, options, data.schema).fit(data.train, data.valid, resume=False)
    big = list(data.test.batches(spec["batch_size"]))
    labels = np.concatenate([b.labels.numpy() for b in big])
    ones = list(data.test.batches(1))[: spec["latency_calls"]]
    runs: list[dict[str, Any]] = []
    aucs = {}
    for repeat in range(spec["repeats"]):
        for bf16 in (False, True):
            start = time.perf_counter()
            logits = score(model, big, bf16)
            seconds = time.perf_counter() - start
            aucs[bf16] = binary_metrics(labels, logits).auc
            ms = latencies_ms(model, ones, bf16)
            runs.append(
                {"repeat": repeat, "bf16": bf16, "batch_size": spec["batch_size"],
                 "samples_per_s": len(labels) / seconds, "latency_p50_ms": float(np.percentile(ms, 50)),
                 "latency_p99_ms": float(np.percentile(ms, 99)), "latency_calls": len(ones),
                 "loadavg": os.getloadavg()[0]}
            )  # fmt: skip
            print(f"[inference] {runs[-1]}", file=sys.stderr, flush=True)
    write_json_atomic(
        result_path,
        {"runs": runs, "test_auc_fp32": aucs[False], "test_auc_bf16": aucs[True], "test_rows": len(labels),
         "train_epochs": epochs, "threads": torch.get_num_threads()},
    )  # fmt: skip
