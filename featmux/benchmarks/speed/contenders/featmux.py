"""featmux itself: its Trainer (`row_adam`), its shard cache, optionally bf16 autocast.

`featmux-dense-adam` is the same run with dense Adam on every parameter, the optimizer DeepCTR-Torch
and torch-rechub train with: the same-optimizer ratio against the peers. It runs on Frappe only (dense
Adam on the synthetic data's 5.37M-row tables reads and writes every row at every step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from featmux.benchmarks.speed.contenders import DENSE_ADAM, Contender
from featmux.benchmarks.speed.workloads import dense_flops_per_sample, encoded_splits, model_options
from featmux.embeddings import (
    Budget,
    EmbeddingSpec,
    build_embedding,
)
from featmux.models import build_model
from featmux.training.config import OptimizerKind, TrainConfig
from featmux.training.trainer import Trainer, evaluate


def run_featmux(spec: dict[str, Any]) -> dict[str, Any]:
    """Train with featmux's Trainer as `spec` says (`optimizer`, default row_adam; `bf16`)."""
    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text())
    splits = encoded_splits(data)
    schema = splits["train"].schema
    torch.manual_seed(spec["seed"])
    dim = spec["embedding_dim"]
    if spec["method"] == "unified":  # the same number of rows as the peers' tables
        emb_spec = EmbeddingSpec("unified", dim, Budget(rows=sum(meta["vocab_sizes"])))
        vocabulary = None
    else:
        emb_spec = EmbeddingSpec("collisionless", dim)
        vocabulary = splits["train"].fit_vocabulary()
    embedding = build_embedding(schema.categorical, emb_spec, vocabulary)
    model = build_model(spec["model"], embedding, 0, model_options(spec))
    config = TrainConfig(
        epochs=spec["epochs"],
        batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"],
        optimizer=OptimizerKind(spec.get("optimizer", "row_adam")),
        patience=spec["epochs"] + 1,
        lr_decay=1.0,
        max_grad_norm=None,
        seed=spec["seed"],
        threads=spec["threads"],
        progress=False,
        autocast_bf16=bool(spec.get("bf16", False)),
    )
    history: list[dict[str, float]] = []
    trainer: Trainer | None = None

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "eval" and trainer is not None:
            history.append(
                {
                    "epoch": float(event["epoch"]),
                    "train_seconds": trainer.state.train_seconds,
                    "valid_auc": float(event["valid_auc"]),
                    "valid_logloss": float(event["valid_logloss"]),
                }
            )
            print(
                f"[featmux {spec['model']}] epoch {event['epoch']:.0f}: {trainer.state.train_seconds:.1f}s "
                f"valid AUC {event['valid_auc']:.5f}",
                file=sys.stderr,
                flush=True,
            )

    trainer = Trainer(model, config, schema, on_event=on_event)
    trainer.fit(splits["train"], splits["valid"])
    test = evaluate(model, splits["test"])
    best = max(history, key=lambda h: h["valid_auc"])
    best["test_auc"], best["test_logloss"] = test.auc, test.logloss
    return {
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "embedding_parameters": embedding.num_parameters(),
        "dense_flops_per_sample": dense_flops_per_sample(model),
        "notes": [f"{embedding.method} embedding, optimizer {config.optimizer.value}, Trainer + shard cache"]
        + (["bf16 autocast on the training forward, evaluation in float32"] if config.autocast_bf16 else []),
    }


def run_featmux_dense_adam(spec: dict[str, Any]) -> dict[str, Any]:
    """`run_featmux` with dense Adam over tables and dense layers (the peers' optimizer)."""
    return run_featmux({**spec, "optimizer": OptimizerKind.ADAM.value})


ROW_ADAM = "row-wise lazy Adam"
CONTENDERS = (
    Contender("featmux", "featmux", run_featmux, optimizer=ROW_ADAM, bf16=True),
    Contender(
        "featmux-dense-adam",
        "featmux, dense Adam",
        run_featmux_dense_adam,
        optimizer=DENSE_ADAM,
        bf16=True,
        datasets=("frappe",),
    ),
)
