from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

GRID: dict[str, Any] = {
    "name": "tiny",
    "seeds": [0, 1],
    "budgets": ["1/4", "1"],
    "methods": ["collisionless", "hashing", "unified"],
    "settings": {"epochs": 1, "batch_size": 256},
    "datasets": {
        "syn": {
            "dataset": "synthetic",
            "dataset_options": {"rows": 2000, "cardinalities": [5, 50, 500]},
            "models": {"dcnv2": {"cross_layers": 1, "hidden": [8]}},
            "settings": {"embedding_dim": 4},
        }
    },
}

COLLISIONLESS_PARAMS = 4000


def _fake_result(config: Any) -> dict[str, Any]:
    """A deterministic stand-in for run_experiment's result, derived from the config."""
    from featmux.embeddings import Budget
    from featmux.training.experiment import run_identity

    fraction = 1.0 if config.budget is None else Budget.parse(config.budget).fraction
    params = round(COLLISIONLESS_PARAMS * fraction)
    bonus = {"collisionless": 0.02, "hashing": 0.0, "unified": 0.01}[config.embedding]
    return {
        **run_identity(config),
        "test_auc": 0.7 + bonus + 0.001 * config.seed,
        "test_logloss": 0.5 - bonus,
        "embedding_params": params,
        "embedding_bytes": 4 * params,
        "train_seconds": 1.0,
        "samples_per_second": 1000.0,
        "threads": config.threads,
    }


@pytest.fixture
def fake_result():
    """fake_result(config) -> a run_experiment-like result dict."""
    return _fake_result


@pytest.fixture
def grid_dict() -> dict[str, Any]:
    """A fresh copy of a tiny grid: 2 seeds x (collisionless + 2 methods x 2 budgets) = 10 cells."""
    return copy.deepcopy(GRID)


@pytest.fixture
def grid_file(tmp_path: Path, grid_dict: dict[str, Any]) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid_dict))
    return path
