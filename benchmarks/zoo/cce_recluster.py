"""What one CCE re-clustering does on Frappe: its solved shape, its cost, and the k-means losses.

Builds `cce` at --budget from the zoo grid's DCN-v2 set-up (configs/frappe_dcnv2.yaml), trains
--steps steps without re-clustering (a short run: not converged), then times one `recluster` and
prints, per feature, the known values, the clusters and the k-means loss at the seeded start and
after the Lloyd iterations.

    PYTHONPATH=$PWD python benchmarks/zoo/cce_recluster.py --budget 1/4 --steps 50
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from featmux.data.prepare import prepare
from featmux.embeddings.cce import ClusteredEmbedding
from featmux.training.experiment import ExperimentConfig, build_experiment_model
from featmux.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/frappe_dcnv2.yaml")
    parser.add_argument("--budget", default="1/4")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ExperimentConfig.from_yaml(
        args.config,
        threads=1,
        progress=False,
        max_steps=args.steps,
        embedding="cce",
        budget=args.budget,
        embedding_options={"recluster_every": 0},
    )
    data = prepare(config.dataset, config.data, config.dataset_options, None, False, lambda _m: None)
    model = build_experiment_model(config, data)
    Trainer(model, config.train_config(), data.schema).fit(data.train, None)
    emb = model.embedding
    assert isinstance(emb, ClusteredEmbedding)
    start = time.perf_counter()
    losses = emb.recluster(0)
    seconds = time.perf_counter() - start
    print(
        f"bytes {emb.memory_bytes():,}, known values {sum(emb.known.values()):,}, recluster {seconds:.3f} s"
    )
    for name, loss in losses.items():
        k = min(emb.rows[name], emb.known[name])
        print(
            f"{name:>12}: {emb.known[name]:>5} known, {k:>4} clusters, "
            f"k-means loss {loss[0]:.4g} -> {loss[-1]:.4g}"
            + (" (a cluster per value: exact)" if k == emb.known[name] else f" ({loss[-1] / loss[0]:.2f}x)")
        )
    print(json.dumps(emb.config()))


if __name__ == "__main__":
    main()
