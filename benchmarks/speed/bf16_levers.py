"""A/B of dense-stack levers on one training step of the Frappe BARS DCN-v2 set-up, interleaved.

Variants (comma-separated, each its own model from the same seed, steps alternating between them in
rounds so a shared machine's load hits all alike; median ms/step over the rounds):
  fp32     float32
  bf16     bf16 autocast (featmux's default where the CPU has native bf16)
  x0bf16   bf16 autocast with the flattened embeddings cast to bf16 once, so the cross layers'
           x0 * (W x + b) + x runs in bf16 instead of being promoted back to float32
  compile  bf16 autocast with `torch.compile` (inductor CPU) on the model's forward

    PYTHONPATH=. python benchmarks/speed/bf16_levers.py fp32,bf16,x0bf16 --threads 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from featmux.data.prepare import prepare
from featmux.models.dcnv2 import DCNv2
from featmux.training.experiment import ExperimentConfig, build_experiment_model
from featmux.training.trainer import Trainer


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("variants", help="comma-separated: fp32, bf16, x0bf16, compile")
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
    needed = 3 + args.rounds * args.steps
    batches = list(data.train.batches(cfg.batch_size, shuffle=True, seed=0, epoch=0))[:needed]
    flat_input = DCNv2.flat_input

    def build(variant: str) -> Trainer:
        torch.manual_seed(0)
        model = build_experiment_model(cfg, data)
        if variant == "x0bf16":

            def cast_input(self, sparse, dense):
                emb, x0 = flat_input(self, sparse, dense)
                return emb, x0.to(torch.bfloat16) if torch.is_autocast_enabled("cpu") else x0

            model.flat_input = cast_input.__get__(model)
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
            chunk = batches[3 + r * args.steps : 3 + (r + 1) * args.steps]
            start = time.perf_counter()
            for b in chunk:
                trainers[v].train_step(b, "step")
            ms[v].append((time.perf_counter() - start) / len(chunk) * 1e3)
    for v in variants:
        print(f"{v}: median {np.median(ms[v]):.1f} ms/step, rounds {[round(x) for x in ms[v]]}")


if __name__ == "__main__":
    main()
