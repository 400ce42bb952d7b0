"""The plain PyTorch baseline: nn.EmbeddingBag(sparse=True) + SparseAdam under featmux's dense layers.

`plain-bf16` is the same loop with the forward under `torch.autocast("cpu", torch.bfloat16)` and the
loss on float32 logits, as a strong PyTorch user writes it; weights, tables and optimizer state stay
float32 and evaluation runs in float32, as featmux's Trainer does.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featmux.benchmarks.speed.contenders import Contender
from featmux.benchmarks.speed.workloads import dense_flops_per_sample, int_schema, model_options
from featmux.embeddings import (
    FeatureEmbedding,
)
from featmux.embeddings.base import INIT_STD
from featmux.features import CategoricalFeature
from featmux.models import build_model
from featmux.sparse import SparseFeatures
from featmux.training.metrics import binary_metrics


class PlainEmbeddingBag(FeatureEmbedding):
    """The plain PyTorch baseline's layer: one nn.EmbeddingBag(sparse=True) over per-field offset ids.

    Args:
        features: the categorical features (ids are per-field indices in [0, V_f)).
        embedding_dim: D.
        vocab_sizes: V_f per feature, in feature order.

    Example:
        >>> layer = PlainEmbeddingBag(schema.categorical, 16, [1000, 50])
    """

    method = "plain-embeddingbag"

    def __init__(
        self, features: Sequence[CategoricalFeature], embedding_dim: int, vocab_sizes: Sequence[int]
    ):
        super().__init__(features, embedding_dim)
        self.bag = nn.EmbeddingBag(int(sum(vocab_sizes)), embedding_dim, mode="sum", sparse=True)
        nn.init.normal_(self.bag.weight, std=INIT_STD)
        starts = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])
        self.register_buffer("starts", torch.tensor(starts, dtype=torch.int64), persistent=False)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(f"{f.name}#0" for f in self.features)

    def config(self) -> dict[str, Any]:
        return {"method": self.method}

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.bag.weight]

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """ids [B, F] -> [B, F, D] (each id a bag of one)."""
        ids = sparse.ids + self.starts  # [B, F]
        return self.bag(ids.reshape(-1, 1)).view(ids.shape[0], ids.shape[1], -1)


def run_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the plain baseline as `spec` says (`bf16`: the training forward under bf16 autocast)."""
    bf16 = bool(spec.get("bf16", False))
    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text())
    arrays = {}
    for split in ("train", "valid", "test"):
        with np.load(data / f"{split}.npz") as z:
            arrays[split] = (torch.from_numpy(z["ids"]), torch.from_numpy(z["labels"]))
    num_fields = arrays["train"][0].shape[1]
    torch.manual_seed(spec["seed"])
    embedding = PlainEmbeddingBag(
        int_schema(num_fields).categorical, spec["embedding_dim"], meta["vocab_sizes"]
    )
    model = build_model(spec["model"], embedding, 0, model_options(spec))
    sparse_opt = torch.optim.SparseAdam(embedding.table_parameters(), lr=spec["learning_rate"])
    dense_opt = torch.optim.Adam(model.dense_parameters(), lr=spec["learning_rate"])
    no_dense = torch.zeros(spec["batch_size"], 0)

    @torch.no_grad()
    def metrics(split: str) -> tuple[float, float]:
        model.eval()
        ids, labels = arrays[split]
        parts = [
            model(SparseFeatures(ids[i : i + 16384]), torch.zeros(min(16384, ids.shape[0] - i), 0))
            for i in range(0, ids.shape[0], 16384)
        ]
        logits = torch.cat(parts)
        model.train()
        m = binary_metrics(labels.numpy(), logits.numpy())
        return m.auc, m.logloss

    ids, labels = arrays["train"]
    generator = torch.Generator().manual_seed(spec["seed"])
    history, seconds = [], 0.0
    for epoch in range(spec["epochs"]):
        start = time.perf_counter()
        order = torch.randperm(ids.shape[0], generator=generator)
        for i in range(0, ids.shape[0], spec["batch_size"]):
            index = order[i : i + spec["batch_size"]]
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(SparseFeatures(ids[index]), no_dense[: index.numel()])
            F.binary_cross_entropy_with_logits(logits.float(), labels[index]).backward()
            sparse_opt.step()
            dense_opt.step()
        seconds += time.perf_counter() - start
        valid_auc, valid_loss = metrics("valid")
        test_auc, test_loss = metrics("test")
        history.append(
            {
                "epoch": epoch + 1,
                "train_seconds": seconds,
                "valid_auc": valid_auc,
                "valid_logloss": valid_loss,
                "test_auc": test_auc,
                "test_logloss": test_loss,
            }
        )
        print(
            f"[plain {spec['model']}] epoch {epoch + 1}: {seconds:.1f}s valid AUC {valid_auc:.5f}",
            file=sys.stderr,
            flush=True,
        )
    notes = ["nn.EmbeddingBag(sparse=True) + SparseAdam, Adam on featmux's dense layers, in-memory batches"]
    if bf16:
        notes.append("torch.autocast('cpu', torch.bfloat16) around the forward, evaluation in float32")
    return {
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dense_flops_per_sample": dense_flops_per_sample(model),
        "notes": notes,
    }


CONTENDERS = (
    Contender(
        "plain",
        "plain PyTorch (sparse)",
        run_plain,
        optimizer="SparseAdam (lazy)",
        bf16=True,
    ),
)
