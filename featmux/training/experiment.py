"""One experiment, end to end: data -> cache -> vocabulary -> embedding at a budget -> model -> train -> test.

This is what `featmux train` runs, and the few-lines Python API:

    >>> from featmux import ExperimentConfig, run_experiment
    >>> config = ExperimentConfig(dataset="frappe", data="data/frappe", embedding="unified", budget="1/16")
    >>> result = run_experiment(config)
    >>> result["test_auc"]
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import torch
from pydantic import Field, model_validator

from featmux.data.prepare import PreparedData, prepare
from featmux.embeddings import (
    FP32_BYTES,
    FeatureEmbedding,
    LearnedPruningEmbedding,
    PruneMethod,
    budget_target,
    build_embedding,
    collisionless_parameters,
)
from featmux.models import CTRModel, build_model
from featmux.training.checkpoint import save_model
from featmux.training.config import TrainConfig
from featmux.training.inference_time import time_inference
from featmux.training.metrics import Metrics
from featmux.training.precision import cpu_flags
from featmux.training.run_config import RunConfig
from featmux.training.serving_form import ServingForm, make_quantization_aware
from featmux.training.trainer import FitSummary, Trainer, evaluate


class ExperimentConfig(RunConfig):
    """Everything one batch training run needs: `RunConfig` plus epochs and early stopping.

    Example:
        >>> ExperimentConfig(dataset="movielens", data="ml-1m", embedding="hashing", budget="1/4")
    """

    epochs: int = Field(5, ge=1)
    patience: int = Field(2, ge=1)
    lr_decay: float = Field(0.1, gt=0, le=1)
    eval_every_steps: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    cache_dir: Path | None = None
    progress: bool = True
    resume: bool = True  # continue from checkpoint_dir/last.pt if there is one; False starts over
    # seed of the train/valid/test split carved from one file (MovieLens, a lone CSV), apart from `seed`
    # (initialization and batch order); None: the source's `seed` option, default 0 (the old behaviour)
    split_seed: int | None = None

    @model_validator(mode="after")
    def _split_seed(self) -> Self:
        if self.split_seed is None:
            return self
        if self.dataset == "synthetic":
            raise ValueError("split_seed: synthetic data has fixed disjoint splits (no split to seed)")
        given = self.dataset_options.get("seed")
        if given is not None and given != self.split_seed:
            raise ValueError(
                f"split_seed {self.split_seed} and dataset_options seed {given} disagree: give one of them"
            )
        return self

    def source_options(self) -> dict[str, Any]:
        """`dataset_options` with the split seed (if set) as the source's `seed` option."""
        if self.split_seed is None:
            return dict(self.dataset_options)
        return {**self.dataset_options, "seed": self.split_seed}

    def effective_split_seed(self) -> int | None:
        """The seed the carved splits use (None for synthetic data, whose splits are fixed)."""
        if self.dataset == "synthetic":
            return None
        return int(self.source_options().get("seed", 0))

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            **self.train_options(),
            epochs=self.epochs,
            patience=self.patience,
            lr_decay=self.lr_decay,
            eval_every_steps=self.eval_every_steps,
            max_steps=self.max_steps,
            progress=self.progress,
        )


def build_experiment_model(config: ExperimentConfig, data: PreparedData) -> CTRModel:
    """The embedding layer at its budget and the model on top, initialized from `config.seed`."""
    torch.manual_seed(config.seed)
    schema = data.schema
    embedding = build_embedding(schema.categorical, config.embedding_spec(), data.vocabulary)
    make_quantization_aware(config, embedding)
    if config.prune_method is PruneMethod.PEP:  # learned thresholds train with the model
        embedding = LearnedPruningEmbedding(embedding, config.pep_init)
    return build_model(config.model, embedding, len(schema.numeric), config.model_options)


def run_experiment(config: ExperimentConfig, log: Any = None) -> dict[str, Any]:
    """Run one experiment and return its results (JSON-able).

    Args:
        config: the experiment.
        log: optional callable receiving progress messages (str).
    """
    say = log or (lambda _msg: None)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    from featmux.data.errors import BadRows
    from featmux.data.sources import open_source

    # names in the options must exist before anything is encoded (opening a source reads no rows, but
    # MovieLens side tables, whose bad lines follow --skip-bad-rows too)
    bad_rows = BadRows.skipping(config.skip_bad_rows)
    source = open_source(config.dataset, config.data, bad_rows=bad_rows, **config.source_options())
    config.check_schema(source.schema)
    t0 = time.perf_counter()
    data = prepare(
        config.dataset,
        config.data,
        config.source_options(),
        config.cache_dir,
        config.skip_bad_rows,
        say,
        progress=config.progress,
    )
    prepare_seconds = time.perf_counter() - t0
    stages = None
    if config.embedding_spec().implementation.staged:  # optembed: supernet, search, retraining
        from featmux.training.optembed import train_optembed

        model, trainer, fit, stages = train_optembed(config, data, say)
    else:
        model = build_experiment_model(config, data)
    emb = model.embedding
    full = collisionless_parameters(
        data.schema.categorical, data.vocabulary, config.embedding_dim, config.min_count
    )
    target = budget_target(data.schema.categorical, config.embedding_spec(), data.vocabulary)
    say(
        f"{config.embedding} embedding: {emb.num_parameters():,} parameters, {emb.memory_bytes():,} bytes "
        f"({emb.memory_bytes() / (full * FP32_BYTES):.4g} x the fp32 collisionless table"
        + (f"; budget {target}" if target is not None else "")
        + f"), {emb.num_slots} slots of dim {emb.embedding_dim}"
    )
    autocast = config.bf16_choice()
    say(f"bf16 autocast {'on' if autocast.enabled else 'off'} ({autocast.reason})")
    if stages is None:
        trainer = Trainer(
            model, config.train_config(), data.schema, config.checkpoint_dir, on_event=event_logger(say)
        )
        fit = trainer.fit(data.train, data.valid, resume=config.resume)
    test = evaluate(model, data.test, trainer.config.eval_batch_size) if data.test is not None else None
    pep = emb if isinstance(emb, LearnedPruningEmbedding) else None
    fp32_bytes = emb.memory_bytes() if pep is None else pep.unpruned_bytes()  # PEP thresholds: not stored
    trained = {"embedding_bytes": fp32_bytes, "test_auc": test.auc if test else None}
    form = ServingForm.of(config, emb)
    served = form.changes
    if served:  # post-training: serve (and test) the quantized or pruned tables
        if pep is not None:
            trained["pep_sparsity"] = pep.sparsity()  # what the learned thresholds reached by themselves
        emb = form.apply(emb)
        model.embedding = emb
        test = evaluate(model, data.test, trainer.config.eval_batch_size) if data.test is not None else None
        note = f" (PEP thresholds reached {trained['pep_sparsity']:.4f} by themselves)" if pep else ""
        say(f"{form.describe()}{note} tables: {emb.memory_bytes():,} bytes (fp32: {fp32_bytes:,})")
    if config.checkpoint_dir is not None:
        save_model(Path(config.checkpoint_dir) / "model.pt", model, data.schema)
    dense = sum(p.numel() for p in model.dense_parameters())
    result = experiment_result(config, data, emb, dense, fit, test, prepare_seconds)
    splits = (("test", data.test), ("valid", data.valid))
    held_out = next(((name, rows) for name, rows in splits if rows is not None and len(rows)), None)
    if held_out is not None:  # timed as it serves: after quantizing or pruning
        timing = time_inference(model, held_out[1], held_out[0])
        result["inference"] = timing.as_dict()
        say(f"inference: {timing.median_ms:.2f} ms per {timing.rows} {timing.split} rows")
    if served:
        result["fp32"] = trained
    if stages is not None:
        result["stages"] = stages
    result["autocast"] = autocast.as_dict()  # the tables' precision is in embedding_config
    if trainer.device.type == "cuda":
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(trainer.device)
    return result


def run_identity(config: RunConfig) -> dict[str, Any]:
    """The fields that open every run's result record: which run it is.

    Args:
        config: the run's settings.

    Returns:
        dataset, model, embedding (its value), budget ("1" without one: the collisionless size) and seed.
    """
    return {
        "dataset": config.dataset,
        "model": config.model,
        "embedding": config.embedding,
        "budget": config.budget or "1",
        "seed": config.seed,
    }


def experiment_result(
    config: RunConfig,
    data: PreparedData,
    embedding: FeatureEmbedding,
    dense_params: int,
    fit: FitSummary,
    test: Metrics | None,
    prepare_seconds: float,
) -> dict[str, Any]:
    """The JSON-able record of a finished run (what `featmux train --out` writes).

    Args:
        config: the run's settings.
        data: its prepared splits and vocabulary.
        embedding: the trained embedding layer (parameters are counted from it).
        dense_params: parameters outside the embedding tables.
        fit: what the trainer measured (`FitResult`, or the distributed trainer's `DistributedFitResult`).
        test: test metrics at the best checkpoint (None without a test split).
        prepare_seconds: time spent reading and encoding the data.
    """
    schema, vocabulary = data.schema, data.vocabulary
    full = collisionless_parameters(schema.categorical, vocabulary, config.embedding_dim, config.min_count)
    target = budget_target(schema.categorical, config.embedding_spec(), vocabulary)
    best = fit.best_valid
    return {
        **run_identity(config),
        "split_seed": config.effective_split_seed() if isinstance(config, ExperimentConfig) else None,
        "test_auc": test.auc if test else None,
        "test_logloss": test.logloss if test else None,
        "valid_auc": best.auc if best else None,
        "valid_logloss": best.logloss if best else None,
        "embedding_params": embedding.num_parameters(),
        "embedding_bytes": embedding.memory_bytes(),
        "collisionless_params": full,
        "collisionless_bytes": full * FP32_BYTES,
        "budget_fraction": embedding.num_parameters() / full,
        "bytes_fraction": embedding.memory_bytes() / (full * FP32_BYTES),
        "budget_target": {"amount": target.amount, "unit": target.unit.value} if target else None,
        "embedding_config": embedding.config(),
        "dense_params": dense_params,
        "train_seconds": fit.train_seconds,
        "samples_per_second": fit.samples_per_second,
        "prepare_seconds": prepare_seconds,
        "steps": fit.steps,
        "epochs": getattr(fit, "epochs", None),
        "best_step": fit.best_step,
        "rows": {"train": len(data.train), "valid": len(data.valid or ()), "test": len(data.test or ())},
        "history": fit.history,
        "environment": environment(),
        "config": json.loads(config.model_dump_json()),
    }


def environment() -> dict[str, Any]:
    """Where a result was measured."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu_flags": list(cpu_flags()),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def event_logger(say: Callable[[str], None], with_epoch: bool = True) -> Callable[[dict[str, Any]], None]:
    """A trainer's `on_event` callback that says each evaluation (and each resume) in one line.

    Args:
        say: receives the lines.
        with_epoch: name the (fractional) epoch of each evaluation besides its step.
    """

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "eval" and "valid_auc" in event:
            epoch = f" epoch {event['epoch']:.2f}" if with_epoch else ""
            say(
                f"step {int(event['step'])}{epoch}: valid AUC {event['valid_auc']:.5f} "
                f"logloss {event['valid_logloss']:.5f} (best {event['best_auc']:.5f})"
            )
        elif event.get("event") == "resumed":
            say(f"resumed from {event['from']} at step {event['step']}")

    return on_event
