"""A/B of dense-stack levers on one training step of the Frappe BARS DCN-v2 set-up, interleaved.

Variants (comma-separated, each its own model from the same seed, steps alternating between them in
rounds so a shared machine's load hits all alike; median ms/step over the rounds):
  fp32     float32
  bf16     bf16 autocast as featmux runs it (default where the CPU has native bf16): DCN-v2 casts
           its flat input x0 to bf16 once, so the cross layers' x0 * (W x + b) + x stays bf16
  x0fp32   bf16 autocast with x0 left float32 (before): every cross layer's output is promoted
           back to float32 and re-cast for the next matmul
  compile  bf16 autocast with `torch.compile` (inductor CPU) on the model's forward

    PYTHONPATH=. python benchmarks/speed/bf16_levers.py fp32,bf16,x0fp32 --threads 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from featmux.data.prepare import prepare
from featmux.training.experiment import ExperimentConfig, build_experiment_model
from featmux.training.trainer import Trainer


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("variants", help="comma-separated: fp32, bf16, x0fp32, compile")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default="../shared/data/frappe")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=7, help="steps per variant per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ExperimentConfig.from_yaml(
        "configs/frappe_dcnv2.yaml", data=args.data, progress=False, threads=args.threads
    )
    data = prepare(cfg.dataset, cfg.data, cfg.dataset_options, None, False, lambda _m: None)
    batches = list(data.train.batches(cfg.batch_size, shuffle=True, seed=0, epoch=0))

    def uncast_forward(self, sparse, dense):  # DCNv2.forward without the cast of x0 (parallel structure)
        _, x0 = self.flat_input(sparse, dense)
        return self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(1)

    def build(variant: str) -> Trainer:
        torch.manual_seed(0)
        model = build_experiment_model(cfg, data)
        if variant == "x0fp32":
            model.forward = uncast_forward.__get__(model)
        trainer = Trainer(model, replace(cfg.train_config(), autocast_bf16=variant != "fp32"), data.schema)
        if variant == "compile":
            trainer.model.forward = torch.compile(trainer.model.forward)
        trainer.model.train()
        start = time.perf_counter()
        for b in batches[:3]:
            trainer.train_step(b, "warm-up")
        print(f"{variant}: warm-up {time.perf_counter() - start:.1f} s", flush=True)
        return trainer

    variants = args.variants.split(",")
    trainers = {v: build(v) for v in variants}
    ms: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            chunk = [batches[(3 + r * args.steps + i) % len(batches)] for i in range(args.steps)]
            start = time.perf_counter()
            for b in chunk:
                trainers[v].train_step(b, "step")
            ms[v].append((time.perf_counter() - start) / len(chunk) * 1e3)
    for v in variants:
        print(f"{v}: median {np.median(ms[v]):.1f} ms/step, rounds {[round(x) for x in ms[v]]}")


if __name__ == "__main__":
    main()
