"""Where bf16 autocast starts to pay: fp32 against bf16 training steps at several batch sizes, interleaved.

The auto rule turns bf16 on wherever the CPU has it natively, whatever the batch. This measures the
premise on one config: samples/s of `Trainer.train_step` per (batch size, precision), the two
precisions alternating in rounds so load hits both alike; median over the rounds.

    PYTHONPATH=. python benchmarks/speed/bf16_batch.py configs/movielens1m_dcnv2.yaml --batches 128,512,4096
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("--batches", default="128,512,1024,4096")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=16384, help="samples per precision per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ExperimentConfig.from_yaml(args.config, progress=False, threads=args.threads)
    data = prepare(cfg.dataset, cfg.data, cfg.dataset_options, None, False, lambda _m: None)
    print(f"{args.config}: {args.threads} thread(s), samples/s of train_step, median of {args.rounds} rounds")
    print("| batch | fp32 samples/s | bf16 samples/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for size in (int(b) for b in args.batches.split(",")):
        batches = list(data.train.batches(size, shuffle=True, seed=0, epoch=0))[
            : max(2, args.samples // size)
        ]
        trainers = {}
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = build_experiment_model(cfg, data)
            trainer = Trainer(
                model, replace(cfg.train_config(), autocast_bf16=bf16, batch_size=size), data.schema
            )
            trainer.model.train()
            for b in batches[:2]:
                trainer.train_step(b, "warm-up")
            trainers[bf16] = trainer
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for bf16, trainer in trainers.items():
                start = time.perf_counter()
                for b in batches:
                    trainer.train_step(b, "timed")
                rates[bf16].append(sum(len(b) for b in batches) / (time.perf_counter() - start))
        fp32, bf16 = float(np.median(rates[False])), float(np.median(rates[True]))
        print(f"| {size} | {fp32:,.0f} | {bf16:,.0f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
