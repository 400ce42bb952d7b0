"""A tiny model trained in seconds on a synthetic table with every kind of input (int, string, hex,
a multivalent int bag, a numeric column), and its fp32 and int8 artefacts, built once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from featmux.serving import Precision, export_model
from featmux.training.checkpoint import load_model
from featmux.training.experiment import ExperimentConfig, run_experiment

COLUMNS = {
    "label": "click",
    "categorical": ["user", "site", "device"],
    "multivalent": ["tags"],
    "numeric": ["price"],
    "encodings": {"user": "int", "device": "hex", "tags": "int"},
}


def table(n: int, seed: int) -> pl.DataFrame:
    """n rows whose click follows user, site and price (the tags carry a little signal)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 200, n)
    site = rng.integers(0, 30, n)
    tags = [rng.integers(0, 20, rng.integers(0, 4)) for _ in range(n)]
    price = rng.normal(size=n)
    logit = (user % 7 - 3) * 0.5 + (site % 3 - 1) + price + 0.2 * np.array([t.size for t in tags])
    return pl.DataFrame(
        {
            "click": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8),
            "user": user,
            "site": [f"site{s}" for s in site],
            "device": [format(int(d), "x") for d in rng.integers(0, 50, n)],
            "tags": ["|".join(str(t) for t in ts) for ts in tags],
            "price": price,
        }
    )


def instances(frame: pl.DataFrame) -> list[dict]:
    """The rows as /predict instances (tags as a list of ints, no label)."""
    rows = frame.drop("click").to_dicts()
    for row in rows:
        row["tags"] = [int(t) for t in row["tags"].split("|")] if row["tags"] else []
    return rows


@pytest.fixture(name="instances")
def instances_fixture():
    """`instances`, the rows -> /predict instances converter."""
    return instances


def train_run(data: Path, out: Path, **settings: Any) -> Path:
    """A 1-epoch run with `settings` on the CSV table `data`; returns its --checkpoint-dir `out`."""
    config = ExperimentConfig(
        dataset="csv",
        data=data,
        dataset_options=COLUMNS,
        embedding_dim=4,
        epochs=1,
        checkpoint_dir=out,
        cache_dir=data.parent / "cache",
        progress=False,
        **settings,
    )
    run_experiment(config)
    return out


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A --checkpoint-dir of a 1-epoch unified-embedding DCN-v2 run on 3,000 rows."""
    root = tmp_path_factory.mktemp("serving")
    table(3000, 0).write_csv(root / "train.csv")
    return train_run(
        root / "train.csv",
        root / "run",
        model="dcnv2",
        model_options={"hidden": [16], "cross_layers": 1},
        embedding="unified",
        budget="1/2",
        batch_size=256,
    )


@pytest.fixture(scope="session")
def train_lr(tmp_path_factory) -> Callable[..., Path]:
    """Trains a 1-epoch LR run of a method on 400 rows at the full budget; returns its --checkpoint-dir."""
    root = tmp_path_factory.mktemp("lr-runs")
    table(400, 0).write_csv(root / "train.csv")

    def train(method: str, out: Path, **extra: Any) -> Path:
        budget = None if method == "collisionless" else "1"
        settings = {"model": "lr", "embedding": method, "budget": budget, "batch_size": 128, **extra}
        return train_run(root / "train.csv", out / "run", **settings)

    return train


@pytest.fixture(scope="session")
def artefacts(run_dir, tmp_path_factory) -> dict[str, Path]:
    """fp32 and int8 artefacts of `run_dir`."""
    model, schema = load_model(run_dir / "model.pt")
    root = tmp_path_factory.mktemp("artefacts")
    out = {}
    for precision in (Precision.FP32, Precision.INT8):
        out[precision.value] = root / precision.value
        export_model(model, schema, out[precision.value], precision)
    return out


@pytest.fixture
def rows() -> pl.DataFrame:
    """200 rows the model has not seen (another seed), with users and sites beyond the training ones."""
    frame = table(200, 7)
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(pl.col("user") + 10_000)
        .otherwise("user")
        .alias("user"),
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.lit("never-seen")).otherwise("site").alias("site"),
    )
