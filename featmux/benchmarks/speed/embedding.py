"""Part `embedding`: the embedding layer alone against nn.EmbeddingBag, TorchRec."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featmux.atomic import write_json_atomic
from featmux.benchmarks.speed.workloads import int_schema
from featmux.embeddings import (
    CollisionlessEmbedding,
    FeatureEmbedding,
    HashingEmbedding,
    UnifiedEmbedding,
    UnifiedEmbeddingConfig,
)
from featmux.sparse import SparseFeatures
from featmux.training.optim import RowAdam


def _embedding_variants(ids: torch.Tensor, vocab_sizes: Sequence[int], dim: int) -> dict[str, Any]:
    """name -> (module, step function) for every layer measured; ids [B, F] per-field indices."""
    num_fields = ids.shape[1]
    features = int_schema(num_fields).categorical
    total = int(sum(vocab_sizes))
    variants: dict[str, Callable[[], Callable[[torch.Tensor], None]]] = {}

    def featmux_layer(layer: FeatureEmbedding, optimizer: str) -> Callable[[torch.Tensor], None]:
        if optimizer == "row_adam":
            opt: torch.optim.Optimizer = RowAdam(layer.table_modules(), lr=1e-3)
        elif optimizer == "sparse_adam":
            layer.set_sparse_gradients(True)
            opt = torch.optim.SparseAdam(layer.table_parameters(), lr=1e-3)
        else:
            opt = torch.optim.Adam(layer.table_parameters(), lr=1e-3)

        def step(batch: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            out = layer(SparseFeatures(batch))  # [B, F, D]
            out.backward(torch.ones_like(out))
            opt.step()

        return step

    def unified() -> UnifiedEmbedding:
        return UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=total, embedding_dim=dim))

    def hashing() -> HashingEmbedding:
        return HashingEmbedding(
            features, dim, {f.name: int(v) for f, v in zip(features, vocab_sizes, strict=True)}
        )

    def collisionless() -> CollisionlessEmbedding:
        from featmux.embeddings import Vocabulary

        vocab = Vocabulary([f.name for f in features])
        for i, f in enumerate(features):
            vocab.update(
                f.name, np.arange(vocab_sizes[i], dtype=np.int64)
            )  # every value known, as the peers'
        return CollisionlessEmbedding.from_vocabulary(features, vocab, dim)

    variants["featmux unified (row_adam)"] = lambda: featmux_layer(unified(), "row_adam")
    variants["featmux hashing (row_adam)"] = lambda: featmux_layer(hashing(), "row_adam")
    variants["featmux collisionless (row_adam)"] = lambda: featmux_layer(collisionless(), "row_adam")
    variants["featmux unified (sparse_adam, before)"] = lambda: featmux_layer(unified(), "sparse_adam")

    def plain_bag(sparse: bool) -> Callable[[torch.Tensor], None]:
        bag = nn.EmbeddingBag(total, dim, mode="sum", sparse=sparse)
        starts = torch.tensor(np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]), dtype=torch.int64)
        opt: torch.optim.Optimizer = (
            torch.optim.SparseAdam(bag.parameters(), lr=1e-3)
            if sparse
            else torch.optim.Adam(bag.parameters(), lr=1e-3)
        )

        def step(batch: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            out = bag((batch + starts).reshape(-1, 1))  # [B * F, D]
            out.backward(torch.ones_like(out))
            opt.step()

        return step

    variants["nn.EmbeddingBag sparse + SparseAdam"] = lambda: plain_bag(True)
    variants["nn.EmbeddingBag dense + Adam"] = lambda: plain_bag(False)
    variants["TorchRec FusedEmbeddingBagCollection (Adam)"] = lambda: _torchrec_step(vocab_sizes, dim, "adam")
    variants["TorchRec FusedEmbeddingBagCollection (row-wise Adagrad)"] = lambda: _torchrec_step(
        vocab_sizes, dim, "rowwise_adagrad"
    )
    variants["TorchRec EmbeddingBagCollection + Adam"] = lambda: _torchrec_step(vocab_sizes, dim, "ebc_adam")
    return variants


def _torchrec_step(vocab_sizes: Sequence[int], dim: int, kind: str) -> Callable[[torch.Tensor], None]:
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
    from torchrec.optim import RowWiseAdagrad as TrecRowWiseAdagrad
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    keys = [f"f{i}" for i in range(len(vocab_sizes))]
    tables = [
        EmbeddingBagConfig(name=f"t{i}", embedding_dim=dim, num_embeddings=int(v), feature_names=[k])
        for i, (k, v) in enumerate(zip(keys, vocab_sizes, strict=True))
    ]
    opt: torch.optim.Optimizer | None = None
    if kind == "ebc_adam":
        module: nn.Module = EmbeddingBagCollection(tables=tables)
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    else:
        optim_type = torch.optim.Adam if kind == "adam" else TrecRowWiseAdagrad
        lr = 1e-3 if kind == "adam" else 0.05
        module = FusedEmbeddingBagCollection(
            tables=tables, optimizer_type=optim_type, optimizer_kwargs={"lr": lr}
        )
    cache: dict[int, Any] = {}

    def step(batch: torch.Tensor) -> None:
        key = batch.data_ptr()
        if key not in cache:  # inputs are converted once, outside the timing (as for every variant)
            cache[key] = KeyedJaggedTensor.from_lengths_sync(
                keys=keys, values=batch.t().reshape(-1), lengths=torch.ones(batch.numel(), dtype=torch.int32)
            )
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        out = module(cache[key]).values()  # [B, F * D]
        out.backward(torch.ones_like(out))  # a fused module updates its rows here
        if opt is not None:
            opt.step()

    return step


def run_embedding_bench(spec_path: Path, result_path: Path) -> None:
    """Entry of the embedding-layer process: time each layer's forward + backward + update."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text())
    with np.load(data / "train.npz") as z:
        ids = torch.from_numpy(z["ids"][: spec["batch_size"] * spec["batches"]])
    batches = list(ids.split(spec["batch_size"]))
    starts = torch.tensor(np.concatenate([[0], np.cumsum(meta["vocab_sizes"])[:-1]]), dtype=torch.int64)
    results = []
    for name, make in _embedding_variants(ids, meta["vocab_sizes"], spec["embedding_dim"]).items():
        steps = (
            spec["steps"]
            if "dense" not in name and "EmbeddingBagCollection +" not in name
            else spec["dense_steps"]
        )
        load = os.getloadavg()
        try:
            step = make()
            for b in batches[:3]:
                step(b)
            start = time.perf_counter()
            for i in range(steps):
                step(batches[i % len(batches)])
            seconds = (time.perf_counter() - start) / steps
            entry: dict[str, Any] = {
                "layer": name,
                "ms_per_step": seconds * 1e3,
                "rows_per_s": spec["batch_size"] / seconds,
            }
        except Exception as err:
            entry = {"layer": name, "error": f"{type(err).__name__}: {err}"[:300]}
        entry.update({"steps": steps, "loadavg": load})
        print(f"[embedding] {entry}", file=sys.stderr, flush=True)
        results.append(entry)
        del make
    write_json_atomic(
        result_path,
        {
            "layers": results,
            "batch_size": spec["batch_size"],
            "fields": ids.shape[1],
            "embedding_dim": spec["embedding_dim"],
            "table_rows": int(sum(meta["vocab_sizes"])),
            "unique_rows_per_batch": float(np.mean([torch.unique(b + starts).numel() for b in batches])),
            "threads": torch.get_num_threads(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        },
    )
