"""Time one short Frappe cell per compression method: training samples/s and inference per 4096 rows.

Each method is built at the budget (bytes of the fp32 collisionless table) from the zoo grid's DCN-v2
set-up (configs/frappe_dcnv2.yaml), trained for --steps steps (not to convergence: this sizes the
grid, it does not rank methods) and then timed on forward passes of 4096 test rows.

    PYTHONPATH=$PWD python benchmarks/zoo/time_methods.py --out benchmarks/zoo/timing_frappe.json
    PYTHONPATH=$PWD python benchmarks/zoo/time_methods.py --methods hashing cce  # a subset
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from featmux.data.prepare import prepare
from featmux.training.experiment import ExperimentConfig, build_experiment_model, environment
from featmux.training.trainer import Trainer

METHODS = {  # label -> (method, options, settings)
    "collisionless": ("collisionless", {}, {}),
    "hashing": ("hashing", {}, {}),
    "unified": ("unified", {}, {}),
    "qr": ("qr", {}, {}),
    "qr-concat": ("qr", {"combiner": "concat"}, {}),
    "hash_embedding": ("hash_embedding", {}, {}),
    "robe": ("robe", {}, {}),
    "mde": ("mde", {}, {}),
    "mde-unified": ("mde", {"layout": "unified"}, {}),
    "dhe": ("dhe", {"hashes": 128, "hidden_layers": 4}, {}),
    "tt": ("tt", {}, {}),
    "adaptive": ("adaptive", {}, {}),
    "cce": ("cce", {"recluster_every": 10}, {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/frappe_dcnv2.yaml")
    parser.add_argument("--budget", default="1/16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None, help="default: all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = ExperimentConfig.from_yaml(args.config, threads=1, progress=False, max_steps=args.steps)
    data = prepare(base.dataset, base.data, base.dataset_options, None, False, lambda _m: None)
    test_batch = next(iter(data.test.batches(4096)))
    rows = []
    for label, (method, options, settings) in METHODS.items():
        if args.methods is not None and label not in args.methods:
            continue
        budget = None if method == "collisionless" else args.budget
        config = base.model_copy(
            update={"embedding": method, "embedding_options": options, "budget": budget, **settings}
        )
        try:
            model = build_experiment_model(ExperimentConfig(**config.model_dump()), data)
        except ValueError as err:
            rows.append({"method": label, "budget": budget, "error": str(err)})
            print(f"{label}: {err}")
            continue
        fit = Trainer(model, config.train_config(), data.schema).fit(data.train, None)
        model.eval()
        with torch.no_grad():
            model(test_batch.sparse, test_batch.dense)  # warm-up
            start = time.perf_counter()
            for _ in range(5):
                model(test_batch.sparse, test_batch.dense)
            infer = (time.perf_counter() - start) / 5
        emb = model.embedding
        row = {
            "method": label,
            "budget": budget or "1",
            "embedding_bytes": emb.memory_bytes(),
            "embedding_params": emb.num_parameters(),
            "steps": fit.steps,
            "train_samples_per_second": fit.samples_per_second,
            "inference_seconds_per_4096": infer,
        }
        rows.append(row)
        print(
            f"{label:>15}: {row['embedding_bytes']:>8,} B  train {fit.samples_per_second:>8,.0f} rows/s  "
            f"infer {1e3 * infer:>7.1f} ms / 4096"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"rows": rows, "steps": args.steps, "environment": environment()}, indent=2)
        )


if __name__ == "__main__":
    main()
