"""Solve every (dataset, method, budget) of a benchmark grid on its data's vocabulary, without training.

`featmux bench run --dry-run` validates a grid's settings; this also builds each seed-0 cell's
embedding layer on the dataset's training vocabulary, so it shows the bytes each method's `solve`
reaches and which cells refuse their budget ("too small"), before hours of CPU go into the grid.

    PYTHONPATH=$PWD python benchmarks/zoo/check_budgets.py benchmarks/configs/zoo_datasets.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from featmux.benchmarks.grid import BenchmarkGrid, repo_root
from featmux.data.prepare import PreparedData, prepare
from featmux.embeddings import FP32_BYTES, build_embedding, collisionless_parameters
from featmux.training.serving_form import ServingForm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="a benchmark grid YAML")
    args = parser.parse_args()
    grid = BenchmarkGrid.from_yaml(args.grid)
    root = repo_root(args.grid)
    prepared: dict[tuple[Any, ...], PreparedData] = {}
    refused = 0
    for cell in grid.cells():
        if cell.seed != min(grid.seeds_of(cell.budget)):
            continue  # seeds change the initialization, not the layer's shape
        config = cell.experiment_config(root)
        options = config.source_options()
        key = (config.dataset, str(config.data), json.dumps(options, sort_keys=True, default=str))
        if key not in prepared:
            started = time.perf_counter()
            prepared[key] = prepare(config.dataset, config.data, options, config.cache_dir, progress=False)
            print(f"# {cell.dataset}: data prepared in {time.perf_counter() - started:.1f} s", flush=True)
        data = prepared[key]
        features = data.schema.categorical
        full = collisionless_parameters(features, data.vocabulary, config.embedding_dim, config.min_count)
        try:
            layer = build_embedding(features, config.embedding_spec(), data.vocabulary)
            served = ServingForm.of(config, layer).served_bytes(layer)
            share = served / (full * FP32_BYTES)
            outcome = f"{served:>12,} bytes served, {share:.4f} x the fp32 collisionless rows"
        except ValueError as err:
            refused += 1
            outcome = "refused: " + str(err).splitlines()[0]
        print(f"{cell.dataset:16s} {cell.method:16s} {cell.budget:6s} {outcome}", flush=True)
    print(f"# {refused} (dataset, method, budget) cells refuse their budget")


if __name__ == "__main__":
    main()
