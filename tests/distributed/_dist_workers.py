"""Builders shared by the distributed tests, and the functions each rank runs (importable by workers)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from featmux.embeddings import Vocabulary
from featmux.features import CategoricalFeature, Pooling, ValueEncoding
from featmux.sparse import Bag, SparseFeatures
from featmux.training.experiment import ExperimentConfig

FEATURES = (
    CategoricalFeature("user", ValueEncoding.INT),
    CategoricalFeature("item.id", ValueEncoding.INT),  # '.' is not allowed in TorchRec table names
    CategoricalFeature("device", ValueEncoding.INT),
    CategoricalFeature("genres", ValueEncoding.INT, multivalent=True),  # mean pooling
    CategoricalFeature("tags", ValueEncoding.INT, multivalent=True, pooling=Pooling.SUM),
)
CARDINALITY = {"user": 1000, "item.id": 300, "device": 4, "genres": 18, "tags": 40}


def make_vocabulary() -> Vocabulary:
    vocab = Vocabulary([f.name for f in FEATURES])
    for name, n in CARDINALITY.items():
        vocab.update(name, np.arange(n, dtype=np.int64))
    return vocab


def make_sparse(batch: int = 64, seed: int = 1) -> SparseFeatures:
    """Ids beyond the vocabularies (OOV rows), bags of 0 to 4 values (empty bags included)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, 1200, (batch,), generator=g) for _ in range(3)], dim=1)

    def bag(high: int) -> Bag:
        lengths = torch.randint(0, 5, (batch,), generator=g)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        return Bag(torch.randint(0, high, (int(offsets[-1]),), generator=g), offsets)

    return SparseFeatures(ids, (bag(25), bag(50)))


# -- the Frappe experiment the multi-process test runs -------------------------------------------------
STEPS = 16  # 2 epochs of 8 global batches of 1024 rows
TABLE_LR = 0.05
TABLE_EPS = 1e-8


def frappe_config(data: Path, cache: Path, max_steps: int, checkpoint_dir: Path | None) -> ExperimentConfig:
    """DCN-v2 over a 2-sub-table unified embedding on a Frappe slice; no early stopping or lr decay,
    so a resumed run and the single-process reference take exactly the same steps."""
    return ExperimentConfig(
        dataset="frappe",
        data=data,
        model="dcnv2",
        model_options={"cross_layers": 1, "hidden": [64]},
        embedding="unified",
        budget="rows:4000",
        embedding_dim=10,  # as BARS Frappe; TorchRec tables are padded to 12 columns
        num_tables=2,
        chunks={"user": 2, "item": 2},
        epochs=2,
        batch_size=1024,
        learning_rate=1e-3,
        eval_every_steps=4,
        patience=100,
        lr_decay=1.0,
        max_steps=max_steps,
        checkpoint_dir=checkpoint_dir,
        cache_dir=cache,
        progress=False,
    )


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _sharded_lookups_match() -> dict[str, float]:
    """Shard hashing / collisionless / unified-with-private layers and compare lookups with featmux."""
    from torchrec.distributed.model_parallel import DistributedModelParallel

    from featmux.distributed import ShardingConfig, TorchRecEmbedding, make_topology, plan_sharding
    from featmux.embeddings import Budget, EmbeddingMethod, EmbeddingSpec, build_embedding

    vocab = make_vocabulary()
    cases = {
        "hashing/table_wise": (
            EmbeddingSpec(EmbeddingMethod.HASHING, 8, Budget(rows=900)),
            ShardingConfig(("table_wise",)),
        ),
        "collisionless/column_wise/dim10": (  # TorchRec tables 12 wide: column shards cross the padding
            EmbeddingSpec(EmbeddingMethod.COLLISIONLESS, 10),
            ShardingConfig(("column_wise",)),
        ),
        "unified+private/mixed": (
            EmbeddingSpec(
                EmbeddingMethod.UNIFIED,
                8,
                Budget(rows=1200),
                num_tables=2,
                chunks={"user": 3},
                private_max_cardinality=20,
            ),
            ShardingConfig(
                ("table_wise",),
                {"unified_t0": ("column_wise",), "private__device": ("data_parallel",)},
            ),
        ),
    }
    out = {}
    sparse = make_sparse(batch=48, seed=10 + dist.get_rank())  # each rank its own batch
    for name, (spec, sharding) in cases.items():
        torch.manual_seed(0)
        layer = build_embedding(FEATURES, spec, vocab)
        embedding = TorchRecEmbedding(layer, device=torch.device("meta"))
        plan, _ = plan_sharding(
            embedding, embedding, sharding, make_topology(dist.get_world_size(), "cpu"), 48, collective=True
        )
        DistributedModelParallel(
            embedding,
            device=torch.device("cpu"),
            plan=plan,
            sharders=sharding.sharders(),
            init_data_parallel=False,
        )
        embedding.load_featmux_state_dict(layer.state_dict())
        with torch.no_grad():
            out[name] = float((embedding(sparse) - layer(sparse)).abs().max())
        back = embedding.featmux_state_dict()  # gathered on rank 0
        if back is not None:
            out[name + "/gathered"] = max(
                float((back[k] - v).abs().max()) for k, v in layer.state_dict().items()
            )
    return out


def _predict_and_restore(data: Path, cache: Path) -> dict[str, float]:
    """Gathered predictions come back in dataset order; an in-memory snapshot of the sharded weights
    (the best model without a checkpoint_dir) restores them exactly."""
    from featmux.data.prepare import prepare
    from featmux.distributed import (
        DistributedTrainer,
        ShardingConfig,
        TableOptimizerConfig,
        TorchRecEmbedding,
        rank_batches,
    )
    from featmux.embeddings import build_embedding
    from featmux.models import build_model

    config = frappe_config(data, cache, STEPS, None)
    prepared = prepare(config.dataset, config.data, config.dataset_options, config.cache_dir)
    torch.manual_seed(0)
    layer = build_embedding(prepared.schema.categorical, config.embedding_spec(), prepared.vocabulary)
    model = build_model(config.model, TorchRecEmbedding(layer), 0, config.model_options)
    sharding = ShardingConfig(("column_wise",), optimizer=TableOptimizerConfig("adagrad", TABLE_LR))
    trainer = DistributedTrainer(model, config.train_config(), sharding, prepared.schema)
    parts = rank_batches(prepared.train, 1024, dist.get_rank(), dist.get_world_size(), True, 0, 0)
    trainer.train_step(next(parts))
    labels, before = trainer.predict(prepared.valid, batch_size=700)  # 700: short last batch, padding
    stored = np.concatenate([c.labels for c in prepared.valid.chunks()])
    snapshot = trainer._snapshot()
    trainer.train_step(next(parts))
    trainer.train_step(next(parts))
    _, moved = trainer.predict(prepared.valid, batch_size=700)
    trainer._restore(snapshot)
    _, after = trainer.predict(prepared.valid, batch_size=700)
    return {
        "label_order_mismatch": float(np.abs(labels - stored).sum() + abs(len(labels) - len(stored))),
        "restored_diff": float(np.abs(after - before).max()),
        "moved_diff": float(np.abs(moved - before).max()),
    }


def first_launch(data: Path, cache: Path, out: Path) -> dict[str, Any]:
    """Sharded lookups; a full run (table-wise); a run stopped at step 4 (table-wise); predictions."""
    _quiet()
    from featmux.distributed import DistributedOptions, run_distributed_training

    lookups = _sharded_lookups_match()
    options = DistributedOptions.parse(sharding="table_wise", table_learning_rate=TABLE_LR)
    full = run_distributed_training(frappe_config(data, cache, STEPS, out / "full"), options)
    partial = run_distributed_training(frappe_config(data, cache, 4, out / "resumed"), options)
    predictions = _predict_and_restore(data, cache)
    return {"lookups": lookups, "full": full, "partial": partial, "predictions": predictions}


def second_launch(data: Path, cache: Path, out: Path) -> dict[str, Any]:
    """Resume the stopped run from its sharded checkpoint under another plan (column-wise)."""
    _quiet()
    from featmux.distributed import DistributedOptions, run_distributed_training

    options = DistributedOptions.parse(sharding="column_wise", table_learning_rate=TABLE_LR)
    return run_distributed_training(frappe_config(data, cache, STEPS, out / "resumed"), options)
