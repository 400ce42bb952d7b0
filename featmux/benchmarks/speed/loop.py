"""Part `loop`: where `Trainer.fit` spends its time against the bare training step, float32 and bf16.

On the Frappe BARS DCN-v2 set-up (`configs/frappe_dcnv2.yaml`: 4 cross layers, MLP 400x3 with batch
norm and dropout 0.4, embedding L2, dense Adam), in one process, variants interleaved and repeated so
that a shared machine's load hits them alike:

- data: the shard cache's shuffled batches alone (what the fit reads per epoch);
- step: `Trainer.train_step` over one epoch of batches built beforehand (no data path), with featmux's
  `FastDropout` and with `nn.Dropout` (what the model used before);
- fit: `Trainer.fit` for a fixed number of epochs (`fit_epochs`, evaluation excluded from its time),
  with the time inside `train_step` summed: the rest of `train_seconds` is the loop's own cost.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featmux.atomic import write_json_atomic
from featmux.benchmarks.speed.workloads import bars_setup
from featmux.models.dropout import FastDropout
from featmux.training.experiment import build_experiment_model
from featmux.training.trainer import Trainer


def use_torch_dropout(model: nn.Module) -> int:
    """Replace every `FastDropout` of `model` by `nn.Dropout` of the same p; returns how many."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, FastDropout):
                setattr(parent, name, nn.Dropout(child.p))
                swapped += 1
    return swapped


def time_steps(trainer: Trainer) -> list[float]:
    """Wrap `trainer.train_step` with a timer; the returned list fills with each step's seconds.

    `fit`'s train_seconds minus their sum is what the loop itself costs (data path, bookkeeping).
    """
    seconds: list[float] = []
    step = trainer.train_step

    def timed(*args: Any, **kwargs: Any) -> float:
        start = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    trainer.train_step = timed  # type: ignore[method-assign]
    return seconds


def run_loop_bench(spec_path: Path, result_path: Path) -> None:
    """Entry of the loop process: data, step and fit samples/s per variant, interleaved (see module doc)."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    config, data = bars_setup(Path(spec["frappe_dir"]), Path(spec["cache_dir"]), spec["threads"])
    train, batch_size = data.train, config.batch_size

    def trainer(bf16: bool, torch_dropout: bool = False, epochs: int = 1) -> Trainer:
        model = build_experiment_model(config, data)
        if torch_dropout:
            use_torch_dropout(model)
        options = replace(config.train_config(), autocast_bf16=bf16, epochs=epochs, patience=epochs + 1)
        return Trainer(model, options, data.schema)

    batches = list(train.batches(batch_size, shuffle=True, seed=config.seed, epoch=0))
    runs: list[dict[str, Any]] = []
    for repeat in range(spec["repeats"]):
        start = time.perf_counter()
        rows = sum(len(b) for b in train.batches(batch_size, shuffle=True, seed=config.seed, epoch=repeat))
        runs.append({"what": "data", "repeat": repeat, "samples_per_s": rows / (time.perf_counter() - start)})
        for bf16 in (False, True):
            for torch_dropout in (False, True):
                t = trainer(bf16, torch_dropout)
                for b in batches[:3]:  # warm-up: oneDNN primitives, allocator
                    t.train_step(b, "warm-up")
                start = time.perf_counter()
                for b in batches:
                    t.train_step(b, "step")
                seconds = time.perf_counter() - start
                dropout = "nn.Dropout" if torch_dropout else "FastDropout"
                runs.append(
                    {"what": "step", "repeat": repeat, "bf16": bf16, "dropout": dropout,
                     "samples_per_s": len(train) / seconds, "loadavg": os.getloadavg()[0]}
                )  # fmt: skip
                print(f"[loop] {runs[-1]}", file=sys.stderr, flush=True)
            fitting = trainer(bf16, epochs=spec["fit_epochs"])
            in_steps = time_steps(fitting)
            fit = fitting.fit(train, data.valid, resume=False)
            runs.append(
                {"what": "fit", "repeat": repeat, "bf16": bf16, "dropout": "FastDropout",
                 "epochs": spec["fit_epochs"], "samples_per_s": fit.samples_per_second,
                 "train_seconds": fit.train_seconds, "step_seconds": sum(in_steps),
                 "valid_auc": fit.best_valid.auc if fit.best_valid else None,
                 "loadavg": os.getloadavg()[0]}
            )  # fmt: skip
            print(f"[loop] {runs[-1]}", file=sys.stderr, flush=True)
    write_json_atomic(
        result_path,
        {"runs": runs, "config": json.loads(config.model_dump_json()), "train_rows": len(train),
         "threads": torch.get_num_threads()},
    )  # fmt: skip
