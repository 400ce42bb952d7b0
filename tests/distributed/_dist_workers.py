"""Builders shared by the distributed tests, and the functions each rank runs (importable by workers)."""

from __future__ import annotations

import json
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
        bf16=False,  # float32 on every CPU, as the single-process reference it is compared with
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
    from featmux.embeddings import Budget, EmbeddingSpec, build_embedding

    vocab = make_vocabulary()
    cases = {
        "hashing/table_wise": (
            EmbeddingSpec("hashing", 8, Budget(rows=900)),
            ShardingConfig(("table_wise",)),
        ),
        "collisionless/column_wise/dim10": (  # TorchRec tables 12 wide: column shards cross the padding
            EmbeddingSpec("collisionless", 10),
            ShardingConfig(("column_wise",)),
        ),
        "unified+private/mixed": (
            EmbeddingSpec(
                "unified",
                8,
                Budget(rows=1200),
                options={"num_tables": 2, "chunks": {"user": 3}, "private_max_cardinality": 20},
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


# -- the training checks of test_training.py ------------------------------------------------------------
SGD_TABLE_LR, SGD_DENSE_LR = 0.5, 0.05  # different: a table trained by the dense optimizer would show
PADDED_BATCH = 1001  # odd: rank 1 gets 500 real rows and one padding row in every global batch
BATCH_NORM_MODEL = {"cross_layers": 1, "hidden": [32, 16], "batch_norm": True}


def sgd_config(data: Path, cache: Path, **changes: Any) -> ExperimentConfig:
    """DCN-v2 (no dropout) over a unified table with private tables for the small Frappe fields."""
    options: dict[str, Any] = {
        "dataset": "frappe",
        "data": data,
        "model": "dcnv2",
        "model_options": {"cross_layers": 1, "hidden": [32]},
        "embedding": "unified",
        "budget": "rows:3000",
        "embedding_dim": 8,
        "num_tables": 2,
        "private_max_cardinality": 10,
        "epochs": 1,
        "batch_size": PADDED_BATCH,
        "learning_rate": SGD_DENSE_LR,
        "patience": 100,
        "lr_decay": 1.0,
        "cache_dir": cache,
        "progress": False,
        "bf16": False,  # float32 on every CPU, as the references these runs are compared with
    }
    return ExperimentConfig(**{**options, **changes})


def _prepare(config: ExperimentConfig) -> Any:
    """The prepared data, encoded by rank 0 while the others wait (as run_distributed_training does)."""
    from featmux.data.prepare import prepare

    def load() -> Any:
        return prepare(config.dataset, config.data, config.dataset_options, config.cache_dir)

    data = load() if dist.get_rank() == 0 else None
    dist.barrier()
    return data if data is not None else load()


def _build(config: ExperimentConfig, prepared: Any, sharding: Any, checkpoint_dir: Path | None = None) -> Any:
    """A DistributedTrainer over the meta-built model, its tables filled as one process starts them."""
    from featmux.distributed import DistributedTrainer, TorchRecEmbedding, tables_on_meta
    from featmux.embeddings import build_embedding
    from featmux.models import build_model

    torch.manual_seed(config.seed)
    draws: list = []
    with tables_on_meta(draws):
        layer = build_embedding(prepared.schema.categorical, config.embedding_spec(), prepared.vocabulary)
    embedding = TorchRecEmbedding(layer, device=torch.device("meta"))
    model = build_model(config.model, embedding, len(prepared.schema.numeric), config.model_options)
    trainer = DistributedTrainer(model, config.train_config(), sharding, prepared.schema, checkpoint_dir)
    embedding.fill_from_draws(draws)
    return trainer


def sgd_and_refusals(data: Path, cache: Path) -> dict[str, Any]:
    """SGD tables (one of them data_parallel) + SGD dense over padded batches; predictions with a
    padded batch size; bf16 autocast applied; the same with batch norm in the MLP."""
    _quiet()
    import dataclasses

    from featmux.distributed import (
        ShardingConfig,
        TableOptimizerConfig,
        TorchRecEmbedding,
        rank_batches,
        tables_on_meta,
    )
    from featmux.embeddings import build_embedding

    config = sgd_config(data, cache)
    prepared = _prepare(config)
    out: dict[str, Any] = {}
    with tables_on_meta():  # the table names
        layer = build_embedding(prepared.schema.categorical, config.embedding_spec(), prepared.vocabulary)
    replicated = next(t.name for t in TorchRecEmbedding(layer).tables if t.name.startswith("private__"))
    sharding = ShardingConfig(
        ("table_wise",),
        {replicated: ("data_parallel",)},
        TableOptimizerConfig("sgd", SGD_TABLE_LR),
        dense_optimizer="sgd",
    )
    trainer = _build(config, prepared, sharding)
    fit = trainer.fit(prepared.train, None)
    out["losses"] = fit.losses
    out["data_parallel_tables"] = trainer.data_parallel_tables
    out["replicated"] = replicated
    out["labels"], out["logits"] = trainer.predict(prepared.valid, batch_size=PADDED_BATCH)
    # bf16: the same step's loss at the same weights, with and without autocast
    part = next(rank_batches(prepared.train, PADDED_BATCH, dist.get_rank(), dist.get_world_size()))
    snapshot = trainer._snapshot()
    plain = trainer.train_step(part)
    trainer._restore(snapshot)
    trainer.config = dataclasses.replace(trainer.config, autocast_bf16=True)
    out["bf16_losses"] = (plain, trainer.train_step(part))
    # batch norm: statistics of the global batch, padding left out
    norm = sgd_config(data, cache, model_options=BATCH_NORM_MODEL)
    trainer = _build(norm, prepared, sharding)
    out["bn_losses"] = trainer.fit(prepared.train, None).losses
    out["bn_labels"], out["bn_logits"] = trainer.predict(prepared.valid, batch_size=PADDED_BATCH)
    return out


def nonfinite_runs(data: Path, cache: Path, out: Path) -> dict[str, Any]:
    """Rank 1's rows of global batch 2 get NaN labels: stop (last checkpoint kept), or skip."""
    _quiet()
    import dataclasses

    from featmux.distributed import RankBatch, ShardingConfig
    from featmux.distributed import train as module
    from featmux.training.trainer import NonFiniteLossError

    original = module.rank_batches

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        for k, part in enumerate(original(*args, **kwargs)):
            if k == 2 and dist.get_rank() == 1:
                labels = torch.full_like(part.batch.labels, float("nan"))
                part = RankBatch(dataclasses.replace(part.batch, labels=labels), part.mask, part.global_rows)
            yield part

    module.rank_batches = poisoned
    prepared = _prepare(sgd_config(data, cache))
    result: dict[str, Any] = {}
    for policy in ("stop", "skip"):
        config = sgd_config(data, cache, on_nonfinite=policy, checkpoint_every_steps=2)
        trainer = _build(config, prepared, ShardingConfig(("table_wise",)), out / policy)
        try:
            fit = trainer.fit(prepared.train, None)
            result[policy] = {"skipped": fit.skipped_batches, "losses": fit.losses}
        except NonFiniteLossError as err:
            result[policy] = {"error": str(err), "step": err.step}
        found, damaged = trainer.find_checkpoint(out / policy / "last")
        result[policy]["last_step"] = json.loads((found / "featmux.json").read_text())["train_state"]["step"]
        result[policy]["damaged"] = damaged
        layer = trainer.embedding.to_featmux(dst=0)
        if layer is not None:
            result[policy]["finite_tables"] = all(bool(torch.isfinite(p).all()) for p in layer.parameters())
        result[policy]["finite_dense"] = all(bool(torch.isfinite(p).all()) for p in trainer.dense_parameters)
    module.rank_batches = original
    return result


def dropout_config(data: Path, cache: Path, checkpoint_dir: Path, **changes: Any) -> ExperimentConfig:
    """Dropout in the MLP, Adagrad tables, a checkpoint every 2 of the 8 steps, no validation."""
    base = sgd_config(
        data,
        cache,
        model_options={"cross_layers": 1, "hidden": [32], "dropout": 0.3},
        batch_size=1024,
        learning_rate=1e-3,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every_steps=2,
    )
    return base.model_copy(update=changes)


def dropout_run(data: Path, cache: Path, checkpoint_dir: Path) -> dict[str, Any]:
    """The uninterrupted dropout run; and what each rank's RNG draws next (distinct masks)."""
    _quiet()
    from featmux.distributed import DistributedOptions, run_distributed_training

    options = DistributedOptions.parse(sharding="table_wise", table_learning_rate=TABLE_LR)
    result = run_distributed_training(dropout_config(data, cache, checkpoint_dir), options)
    return {"result": result, "next_draw": torch.rand(4)}


def killed_mid_step(data: Path, cache: Path, checkpoint_dir: Path, step: int) -> None:
    """Rank 1 kills itself (SIGKILL) in the middle of training step `step`: after the forward pass,
    before the loss all_reduce, while rank 0 waits in it."""
    _quiet()
    import os
    import signal
    import types

    import torch.nn.functional as F

    from featmux.distributed import DistributedOptions, run_distributed_training
    from featmux.distributed import train as module

    calls = {"n": 0}

    def bce(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == step and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return F.binary_cross_entropy_with_logits(*args, **kwargs)

    module.F = types.SimpleNamespace(binary_cross_entropy_with_logits=bce)
    options = DistributedOptions.parse(sharding="table_wise", table_learning_rate=TABLE_LR)
    run_distributed_training(dropout_config(data, cache, checkpoint_dir), options)


def resume_twice(data: Path, cache: Path, checkpoint_dir: Path) -> dict[str, Any]:
    """Resume (a damaged `last` falls back to `last.prev`); then lose `last` between the two renames
    of a save and resume again; then start over (resume=False)."""
    _quiet()
    import os
    import shutil

    from featmux.distributed import DistributedOptions, run_distributed_training

    options = DistributedOptions.parse(sharding="table_wise", table_learning_rate=TABLE_LR)
    config = dropout_config(data, cache, checkpoint_dir)
    first: list[str] = []
    resumed = run_distributed_training(config, options, log=first.append)
    if dist.get_rank() == 0:  # a save that crashed after `last` -> `last.prev`, before `.tmp` -> `last`
        last = checkpoint_dir / "last"
        shutil.rmtree(checkpoint_dir / "last.prev")
        os.replace(last, checkpoint_dir / "last.prev")
    dist.barrier()
    second: list[str] = []
    again = run_distributed_training(config, options, log=second.append)
    fresh = run_distributed_training(config.model_copy(update={"resume": False}), options)
    return {"resumed": resumed, "first_log": first, "again": again, "second_log": second, "fresh": fresh}


def slow_rank0_prepare(
    data: Path, cache: Path, collective_timeout_s: float, delay_s: float
) -> dict[str, Any]:
    """Rank 0 encodes for longer than the default collective timeout while rank 1 waits for it."""
    _quiet()
    import time
    from datetime import timedelta

    from torch.distributed.distributed_c10d import _set_pg_timeout

    from featmux.distributed import DistributedOptions, run_distributed_training
    from featmux.distributed import run as module

    _set_pg_timeout(timedelta(seconds=collective_timeout_s), None)
    real = module.prepare

    def slow(*args: Any, **kwargs: Any) -> Any:
        if dist.get_rank() == 0:
            time.sleep(delay_s)
        return real(*args, **kwargs)

    module.prepare = slow
    config = sgd_config(data, cache, max_steps=1, cache_dir=cache / "fresh")
    result = run_distributed_training(config, DistributedOptions.parse(sharding="table_wise"))
    return {"steps": result["steps"]}
