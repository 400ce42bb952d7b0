"""Online training on a time-ordered stream, with progressive validation and exact resume.

Real CTR systems train continuously: every hour (or day) brings a partition of new rows, and new IDs
with it. `run_online` replays such a stream in time order. For each partition it first *evaluates* the
model on it (progressive validation: the partition is data the model has never trained on, as in
production), logs the AUC and logloss, then trains on it.

Streams (`OnlineConfig`):
- synthetic: consecutive row ranges of the synthetic generator (`partition_rows` each), with its ID
  churn (`churn_rows`, `churn_period`) and concept drift (`drift_rows`) options;
- a directory: one partition per file, in name order (Avazu hour files `14102100.csv` ..., Criteo
  `day_0` ... `day_23`), each read by the dataset's reader;
- one file: blocks of `partition_rows` rows in file order, or runs of equal values of
  `partition_column` (a time-ordered Avazu file with `partition_column: hour_of_day` gives its hours).

Vocabularies: the collisionless table and per-feature hashing need value counts. In a stream they come
from the first `vocabulary_partitions` partitions and are then frozen, as a deployed model's would be:
later IDs fall into the collisionless OOV row, or hash into rows sized by those counts. Unified
Embedding needs none; a fractional budget is measured against the same frozen collisionless size, so
every method gets the same memory.

Faults: the resumable checkpoint (`<checkpoint_dir>/last.pt`, written atomically every
`checkpoint_every_steps` steps and after every partition) holds the model, optimizers, RNG and the
stream position (partition, pass, batch) with the results so far. `resume=True` continues exactly
there, so a run killed at any moment (SIGKILL in the middle of a write included) ends with the same
weights and results as an uninterrupted one. A truncated or corrupted newest checkpoint is reported and
the previous one used. A NaN/Inf loss is reported with the partition, batch and rows that caused it,
and stops the run or skips the batch, as `on_nonfinite` says.

Example:
    >>> config = OnlineConfig(
    ...     dataset="synthetic", partition_rows=100_000, partitions=12, embedding="unified", budget="1",
    ...     dataset_options={"churn_rows": 100_000, "drift_rows": 400_000}, checkpoint_dir="runs/online",
    ... )
    >>> result = run_online(config, log=print)  # after a crash: the same call with resume=True
    >>> [round(p.auc, 4) for p in result.partitions]
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from featmux.data.cache import chunk_to_batch
from featmux.data.encoded import EncodedChunk, encode_frame
from featmux.data.errors import BadRowPolicy, BadRows
from featmux.data.synthetic import SyntheticConfig, iter_synthetic
from featmux.embeddings import (
    EmbeddingMethod,
    Vocabulary,
    build_embedding,
    check_features,
    collisionless_parameters,
)
from featmux.features import Schema
from featmux.models import CTRModel, build_model
from featmux.training.checkpoint import (
    CheckpointError,
    build_from_spec,
    load_resumable,
    previous_path,
    save_model,
)
from featmux.training.config import TrainConfig
from featmux.training.experiment import environment
from featmux.training.metrics import Metrics, binary_metrics
from featmux.training.run_config import RunConfig
from featmux.training.trainer import RESUMABLE_KEYS, Trainer

SYNTHETIC = "synthetic"
RESULTS_FILE = "progressive.json"
"""Written to the checkpoint directory after every partition: the results so far."""

# fields a resumed run may change: they do not change the results computed so far (a run that stopped at a
# NaN loss or a bad row has skipped none yet, so it may go on with on_nonfinite=skip / skip_bad_rows)
_VOLATILE = frozenset(
    {
        "threads",
        "checkpoint_dir",
        "resume",
        "partitions",
        "checkpoint_every_steps",
        "on_nonfinite",
        "skip_bad_rows",
    }
)
_NO_SPLITS = (1.0, 0.0, 0.0)  # read a whole file as the train split (no hash-carved valid/test rows)


class OnlineConfig(RunConfig):
    """One online-training run: the stream, how it is cut into partitions, the model and the training.

    Unknown keys are errors. The embedding, model and optimizer options mean what they mean in
    `ExperimentConfig`.

    Args:
        dataset: synthetic, or a source name of `featmux.data.sources` (avazu, criteo, csv, ...).
        data: a directory (one partition per file matching `partition_glob`, in name order) or one
            file (cut by `partition_rows` or `partition_column`); None for synthetic.
        dataset_options: source options; for synthetic the `SyntheticConfig` fields (e.g. churn_rows,
            churn_period, drift_rows, cardinalities, seed).
        partition_rows: rows per partition (synthetic: required; one file: blocks in file order).
        partition_column: one file: a new partition starts where this column's value changes.
        partition_glob: files of a directory that are partitions.
        partitions: stop after this many partitions (synthetic: required). A resumed run may raise it.
        vocabulary_partitions: the vocabulary is fitted on this many first partitions, then frozen.
        passes: training passes over each partition.
        shuffle: shuffle rows within a partition (seeded by seed, partition and pass).
        checkpoint_every_steps: also checkpoint every this many steps (always after each partition).
        resume: continue the run in `checkpoint_dir` if there is one; without it an existing run there
            is an error (it is never overwritten by accident).
        on_nonfinite: a batch with a NaN/Inf loss stops the run, or is skipped and counted.

    Example:
        >>> OnlineConfig(dataset="avazu", data="hours/", embedding="hashing", budget="1/4")
    """

    dataset: str = SYNTHETIC
    partition_rows: int | None = Field(None, ge=1)
    partition_column: str | None = None
    partition_glob: str = "*"
    partitions: int | None = Field(None, ge=1)
    vocabulary_partitions: int = Field(1, ge=1)
    passes: int = Field(1, ge=1)
    shuffle: bool = True
    batch_size: int = Field(1024, ge=1)
    max_grad_norm: float | None = Field(10.0, gt=0)
    eval_batch_size: int = Field(16384, ge=1)
    resume: bool = False

    @model_validator(mode="after")
    def _stream(self) -> OnlineConfig:
        if self.partition_rows is not None and self.partition_column is not None:
            raise ValueError("give partition_rows or partition_column, not both")
        if self.dataset == SYNTHETIC:
            if self.data is not None:
                raise ValueError("the synthetic stream has no data path; set dataset_options instead")
            if self.partition_rows is None or self.partitions is None:
                raise ValueError("the synthetic stream needs partition_rows and partitions")
            if self.partition_column is not None:
                raise ValueError("the synthetic stream is cut by partition_rows, not partition_column")
            self.synthetic_config()
        elif self.data is None:
            raise ValueError(f"{self.dataset}: set data to a directory of partition files or one file")
        if self.partitions is not None and self.vocabulary_partitions > self.partitions:
            raise ValueError(
                f"vocabulary_partitions ({self.vocabulary_partitions}) must be at most "
                f"partitions ({self.partitions})"
            )
        return self

    def synthetic_config(self) -> SyntheticConfig:
        """The synthetic generator's config (dataset_options are its fields)."""
        names = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = sorted(set(self.dataset_options) - names)
        if unknown:
            raise ValueError(
                f"synthetic: unknown dataset_options {unknown}; valid options are {sorted(names)}"
            )
        return SyntheticConfig(**self.dataset_options)

    def train_config(self) -> TrainConfig:
        """The per-step training options."""
        return TrainConfig(
            epochs=self.passes,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            embedding_l2=self.embedding_l2,
            optimizer=self.optimizer,
            lr_decay=1.0,
            checkpoint_every_steps=self.checkpoint_every_steps,
            max_grad_norm=self.max_grad_norm,
            eval_batch_size=self.eval_batch_size,
            seed=self.seed,
            threads=self.threads,
            progress=False,
            on_nonfinite=self.on_nonfinite,
        )

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide a run's results (a resumed run must have the same)."""
        return self.model_dump(mode="json", exclude=set(_VOLATILE))


# -- streams ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPartition:
    """One partition of a stream.

    Args:
        index: 0-based position in time order.
        name: what it is (a file name, a row range, `hour_of_day=5`), stored with checkpoints.
        load: reads its rows (lazily where the source allows, so skipped partitions cost nothing).

    Example:
        >>> part = next(iter_partitions(config, BadRows())[1])
        >>> part.name, sum(f.height for f in part.load())
    """

    index: int
    name: str
    load: Callable[[], list[pl.DataFrame]] = field(repr=False)


def _synthetic_rows(config: SyntheticConfig, start: int, rows: int) -> list[pl.DataFrame]:
    return list(iter_synthetic(config, rows, chunk_rows=rows, start_row=start))


def _source(config: OnlineConfig, path: Path, bad_rows: BadRows) -> Any:
    from featmux.data.sources import open_source

    options = {**config.dataset_options, "fractions": _NO_SPLITS}
    return open_source(config.dataset, path, bad_rows=bad_rows, **options)


def _read_all(config: OnlineConfig, path: Path, bad_rows: BadRows) -> list[pl.DataFrame]:
    return list(_source(config, path, bad_rows).split("train"))


def _by_column(frames: Iterator[pl.DataFrame], column: str) -> Iterator[tuple[str, list[pl.DataFrame]]]:
    """Runs of equal `column` values in stream order, as (name, frames)."""
    pending: list[pl.DataFrame] = []
    current: Any = None
    for frame in frames:
        if frame.height == 0:
            continue
        values = frame.get_column(column)
        runs = values.rle_id().to_numpy()
        starts = np.concatenate(([0], np.flatnonzero(np.diff(runs)) + 1, [frame.height]))
        for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
            value = values[lo]
            if pending and value != current:
                yield f"{column}={current}", pending
                pending = []
            current = value
            pending.append(frame.slice(lo, hi - lo))
    if pending:
        yield f"{column}={current}", pending


def iter_partitions(config: OnlineConfig, bad_rows: BadRows) -> tuple[Schema, Iterator[StreamPartition]]:
    """The schema of a stream and its partitions in time order (at most `config.partitions`).

    Args:
        config: the run (dataset, data and partition options).
        bad_rows: where malformed rows go.

    Returns:
        (schema, partitions); nothing is read before the iterator is advanced, except one file's
        header (or first block) to learn the schema.

    Raises:
        FileNotFoundError: `data` does not exist, or a directory has no partition files.
        ValueError: `partition_column` is not a column of the schema, or a directory is combined with
            `partition_rows` / `partition_column`.
    """
    limit = config.partitions if config.partitions is not None else math.inf
    if config.dataset == SYNTHETIC:
        synthetic = config.synthetic_config()
        from featmux.data.synthetic import synthetic_schema

        rows = config.partition_rows
        assert rows is not None and config.partitions is not None
        parts = (
            StreamPartition(
                p,
                f"rows {p * rows}-{(p + 1) * rows - 1}",
                functools.partial(_synthetic_rows, synthetic, p * rows, rows),
            )
            for p in range(config.partitions)
        )
        return synthetic_schema(synthetic), parts
    assert config.data is not None
    data = Path(config.data)
    if not data.exists():
        raise FileNotFoundError(f"{config.dataset}: {data} does not exist")
    if data.is_dir():
        if config.partition_rows is not None or config.partition_column is not None:
            raise ValueError(
                f"{data} is a directory: each file is a partition (partition_rows and partition_column "
                "cut a single file)"
            )
        files = sorted(
            p for p in data.glob(config.partition_glob) if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise FileNotFoundError(f"{data}: no partition files match {config.partition_glob!r}")
        schema = _source(config, files[0], bad_rows).schema
        parts = (
            StreamPartition(i, f.name, functools.partial(_read_all, config, f, bad_rows))
            for i, f in enumerate(files)
            if i < limit
        )
        return schema, parts
    source = _source(config, data, bad_rows)
    schema = source.schema
    columns = [schema.label, *schema.feature_names, *(f.name for f in schema.numeric)]
    if config.partition_column is not None and config.partition_column not in columns:
        raise ValueError(
            f"partition_column {config.partition_column!r} is not a column of {config.dataset}; "
            f"valid columns are {columns}"
        )
    if config.partition_rows is None and config.partition_column is None:
        raise ValueError(
            f"{data} is one file: set partition_rows or partition_column to cut it into partitions"
        )

    def parts_of_file() -> Iterator[StreamPartition]:
        if config.partition_rows is not None:
            rows = config.partition_rows
            named = (
                (f"rows {i * rows}-{i * rows + frame.height - 1}", [frame])
                for i, frame in enumerate(source.split("train", chunk_rows=rows))
            )
        else:
            assert config.partition_column is not None
            named = _by_column(source.split("train"), config.partition_column)
        for i, (name, frames) in enumerate(named):
            if i >= limit:
                return
            yield StreamPartition(i, name, functools.partial(list, frames))

    return schema, parts_of_file()


# -- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionResult:
    """Progressive validation of one partition: the model's scores on it before it trained on it.

    Args:
        index: position in the stream.
        name: the partition's name.
        rows: its rows.
        auc: progressive-validation AUC (NaN with a single class).
        logloss: progressive-validation logloss.
        unseen_share: share of its categorical values absent from the frozen vocabulary.
        train_loss: mean training loss over its batches (NaN if none was finite).
        steps: optimizer steps taken so far, this partition included.
        skipped_batches: batches skipped so far for a non-finite loss.
        nonfinite_predictions: rows whose prediction was NaN/Inf (left out of AUC and logloss).

    Example:
        >>> PartitionResult(3, "14102103.csv", 100_000, 0.74, 0.41, 0.12, 0.40, 400, 0)
    """

    index: int
    name: str
    rows: int
    auc: float
    logloss: float
    unseen_share: float
    train_loss: float = float("nan")
    steps: int = 0
    skipped_batches: int = 0
    nonfinite_predictions: int = 0


@dataclass(frozen=True)
class OnlineResult:
    """What `run_online` measured.

    Args:
        embedding: the method.
        budget: the budget as given ("1" when none: the frozen collisionless size).
        embedding_params: parameters of the embedding tables.
        collisionless_params: parameters of the collisionless layer on the frozen vocabulary.
        partitions: progressive validation, one entry per partition in stream order.
        train_seconds: time spent in training steps (data loading for them included).
        samples_per_second: training rows per second.
        bad_rows: summary of skipped malformed input rows.
        resumed_from: the checkpoint the run continued from (None: it started from scratch).
        config: the run's config (JSON-able).
        model: the trained model (not part of `as_dict`).

    Example:
        >>> result = run_online(config)
        >>> result.mean_auc(), result.partitions[-1].auc
    """

    embedding: str
    budget: str
    embedding_params: int
    collisionless_params: int
    partitions: tuple[PartitionResult, ...]
    train_seconds: float
    samples_per_second: float
    bad_rows: str
    resumed_from: str | None
    config: dict[str, Any]
    model: CTRModel | None = field(default=None, repr=False, compare=False)

    def mean_auc(self, skip: int | None = None) -> float:
        """Mean progressive AUC over the partitions after the first `skip` (default: the vocabulary ones).

        Args:
            skip: leading partitions to leave out (the first is scored by an untrained model).
        """
        skip = int(self.config.get("vocabulary_partitions", 1)) if skip is None else skip
        values = [p.auc for p in self.partitions[skip:] if not math.isnan(p.auc)]
        return float(np.mean(values)) if values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able results (the model left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["partitions"] = [dataclasses.asdict(p) for p in self.partitions]
        out["mean_auc"] = self.mean_auc()
        return out


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """Stream position and results so far; stored in every checkpoint (entry "online")."""

    partition: int = 0  # the partition being (or next to be) processed
    pass_: int = 0
    batch: int = 0  # next batch of the pass
    loss_sum: float = 0.0  # training loss of the current partition so far
    loss_batches: int = 0
    names: list[str] = field(default_factory=list)  # names of the partitions reached, for stream checks
    records: list[dict[str, Any]] = field(default_factory=list)  # PartitionResult fields


def _encode(frames: Sequence[pl.DataFrame], schema: Schema) -> EncodedChunk:
    chunks = [encode_frame(f, schema) for f in frames if f.height]
    if not chunks:
        return encode_frame(pl.DataFrame(schema=frames[0].schema) if frames else _empty(schema), schema)
    return EncodedChunk.concat(chunks)


def _empty(schema: Schema) -> pl.DataFrame:
    columns = {schema.label: pl.Int8}
    for f in schema.categorical:
        columns[f.name] = pl.List(pl.Int64) if f.multivalent else pl.Int64
    columns |= {f.name: pl.Float64 for f in schema.numeric}
    return pl.DataFrame(schema=columns)


def _frozen_keys(vocabulary: Vocabulary, schema: Schema, min_count: int) -> dict[str, np.ndarray]:
    return {name: vocabulary[name].kept(min_count) for name in schema.feature_names}


def unseen_share(chunk: EncodedChunk, schema: Schema, keys: Mapping[str, np.ndarray]) -> float:
    """Share of a chunk's categorical values (bag items included) that are not in `keys`.

    Args:
        chunk: encoded rows.
        schema: their schema.
        keys: sorted fingerprints per feature (a frozen vocabulary).

    Returns:
        A number in [0, 1] (NaN for an empty chunk).
    """
    columns = [(chunk.ids[:, i], keys[f.name]) for i, f in enumerate(schema.univalent)]
    columns += [(chunk.bags[j].values, keys[f.name]) for j, f in enumerate(schema.multivalent)]
    total = sum(v.size for v, _ in columns)
    if total == 0:
        return float("nan")
    missing = 0
    for values, known in columns:
        if known.size == 0:
            missing += values.size
            continue
        pos = np.minimum(np.searchsorted(known, values), known.size - 1)
        missing += int(np.count_nonzero(known[pos] != values))
    return missing / total


@torch.no_grad()
def _progressive(model: CTRModel, chunk: EncodedChunk, batch_size: int) -> tuple[Metrics, int]:
    """AUC/logloss of `model` on `chunk`, and how many rows got a NaN/Inf prediction (left out)."""
    n = len(chunk)
    if n == 0:
        return Metrics(float("nan"), float("nan"), 0), 0
    model.eval()
    parts = []
    for start in range(0, n, batch_size):
        batch = chunk_to_batch(chunk.take(np.arange(start, min(n, start + batch_size))))
        parts.append(model(batch.sparse, batch.dense).float().numpy())
    model.train()
    logits = np.concatenate(parts)
    finite = np.isfinite(logits)
    if finite.all():
        return binary_metrics(chunk.labels, logits), 0
    return binary_metrics(chunk.labels[finite], logits[finite]), int(n - finite.sum())


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def run_online(config: OnlineConfig, log: Callable[[str], None] | None = None) -> OnlineResult:
    """Train on a stream partition by partition, with progressive validation (see the module docstring).

    Args:
        config: the run.
        log: receives one progress line per partition (and about resumes, skips, bad rows).

    Returns:
        The per-partition progressive-validation results and the trained model.

    Raises:
        ValueError: an invalid option (a message says what to change), or an existing run in
            `checkpoint_dir` without `resume`.
        CheckpointError: no usable checkpoint, or one written by a different run or stream.
        DataError: malformed input (unless `skip_bad_rows`), naming file, line and field.
        NonFiniteLossError: a NaN/Inf loss under `on_nonfinite=stop`, naming the batch.
    """
    say = log or (lambda _m: None)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    bad = BadRows(BadRowPolicy.SKIP if config.skip_bad_rows else BadRowPolicy.RAISE)
    schema, stream = iter_partitions(config, bad)
    check_features(config.embedding_spec(), schema.categorical)  # before any data is read
    ckpt = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    last = ckpt / "last.pt" if ckpt is not None else None
    found = None
    if last is not None:
        if config.resume:
            found = load_resumable(last, (*RESUMABLE_KEYS, "online"))
        elif last.exists() or previous_path(last).exists():
            raise ValueError(
                f"{ckpt} holds a run already: resume it (resume=True, --resume) or use another checkpoint_dir"
            )

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "resumed":
            for message in event.get("skipped_damaged", []):
                say(f"damaged checkpoint skipped: {message}")
            say(f"resumed from {event['from']} at step {event['step']}")
        elif event.get("event") == "nonfinite":
            say(event["message"])

    train_config = config.train_config()
    warm: dict[int, EncodedChunk] = {}
    if found is not None:
        saved = found.payload["online"]
        if saved["config"] != config.fingerprint():
            differ = sorted(k for k, v in config.fingerprint().items() if saved["config"].get(k) != v)
            raise CheckpointError(
                f"{found.path}: written by a run with other options ({', '.join(differ)} differ): "
                "resume with the same options, or use another checkpoint_dir"
            )
        model, _ = build_from_spec(found.payload["spec"])
        trainer = Trainer(model, train_config, schema, ckpt, on_event=on_event)
        trainer.restore(found.payload, found.path, found.damaged)
        keys = {name: t.numpy() for name, t in saved["vocabulary"].items()}
        full = int(saved["collisionless_params"])
        progress = _Progress(**saved["progress"])
        partitions = iter(stream)
    else:
        partitions = iter(stream)
        vocabulary = Vocabulary(schema.feature_names)
        first: list[StreamPartition] = []
        for part in partitions:
            chunk = _encode(part.load(), schema)
            warm[part.index] = chunk
            first.append(part)
            for i, f in enumerate(schema.univalent):
                vocabulary.update(f.name, chunk.ids[:, i])
            for j, f in enumerate(schema.multivalent):
                vocabulary.update(f.name, chunk.bags[j].values)
            if len(first) == config.vocabulary_partitions:
                break
        if not first:
            raise ValueError(f"{config.dataset}: the stream has no partitions")
        partitions = _chain(first, partitions)
        full = collisionless_parameters(
            schema.categorical, vocabulary, config.embedding_dim, config.min_count
        )
        keys = _frozen_keys(vocabulary, schema, config.min_count)
        torch.manual_seed(config.seed)
        embedding = build_embedding(schema.categorical, config.embedding_spec(), vocabulary)
        model = build_model(config.model, embedding, len(schema.numeric), config.model_options)
        trainer = Trainer(model, train_config, schema, ckpt, on_event=on_event)
        progress = _Progress()
    emb = model.embedding
    say(
        f"online {config.dataset}: {config.embedding.value} embedding, {emb.num_parameters():,} parameters "
        f"({emb.num_parameters() / full:.4g} x the frozen collisionless size {full:,})"
    )
    state = trainer.state
    vocab_tensors = {name: torch.from_numpy(k) for name, k in keys.items()}

    def save() -> None:
        if ckpt is None:
            return
        trainer.save_checkpoint(
            {
                "online": {
                    "config": config.fingerprint(),
                    "progress": dataclasses.asdict(progress),
                    "vocabulary": vocab_tensors,
                    "collisionless_params": full,
                }
            }
        )

    model.train()
    batch_size = config.batch_size
    for part in partitions:
        if part.index < progress.partition:
            continue  # done before the restart: not even read where the source allows
        if part.index < len(progress.names) and progress.names[part.index] != part.name:
            raise CheckpointError(
                f"the stream changed: the checkpoint's partition {part.index} is "
                f"{progress.names[part.index]!r}, the stream's is {part.name!r}"
            )
        chunk = warm.pop(part.index) if part.index in warm else _encode(part.load(), schema)
        n = len(chunk)
        if len(progress.records) <= part.index:
            metrics, nonfinite = _progressive(model, chunk, config.eval_batch_size)
            unseen = unseen_share(chunk, schema, keys)
            progress.names.append(part.name)
            record = PartitionResult(part.index, part.name, n, metrics.auc, metrics.logloss, unseen)
            progress.records.append(dataclasses.asdict(record) | {"nonfinite_predictions": nonfinite})
            if nonfinite:
                say(f"partition {part.index} ({part.name}): {nonfinite} row(s) got a NaN/Inf prediction")
            say(
                f"partition {part.index} ({part.name}): {n:,} rows, progressive AUC {metrics.auc:.5f} "
                f"logloss {metrics.logloss:.5f}, {unseen:.1%} of values unseen in the frozen vocabulary"
            )
        batches = -(-n // batch_size)
        every = config.checkpoint_every_steps
        for k in range(progress.pass_, config.passes):
            order = (
                np.random.default_rng([config.seed, part.index, k]).permutation(n)
                if config.shuffle
                else np.arange(n)
            )
            for b in range(progress.batch, batches):
                started = time.perf_counter()
                index = order[b * batch_size : (b + 1) * batch_size]
                batch = chunk_to_batch(chunk.take(index))
                where = f"partition {part.index} ({part.name}), pass {k}, batch {b}"
                loss = trainer.train_step(batch, where, functools.partial(_describe_rows, part.name, index))
                state.train_seconds += time.perf_counter() - started
                state.step += 1
                state.train_rows += len(batch)
                if math.isfinite(loss):
                    progress.loss_sum += loss
                    progress.loss_batches += 1
                progress.batch = b + 1
                if every is not None and state.step % every == 0:
                    save()
            progress.pass_, progress.batch = k + 1, 0
        record = progress.records[part.index]
        record["train_loss"] = (
            progress.loss_sum / progress.loss_batches if progress.loss_batches else math.nan
        )
        record["steps"] = state.step
        record["skipped_batches"] = state.skipped_batches
        progress.partition, progress.pass_, progress.batch = part.index + 1, 0, 0
        progress.loss_sum, progress.loss_batches = 0.0, 0
        save()
        if ckpt is not None:
            _write_json(ckpt / RESULTS_FILE, progress.records)
    if bad.skipped:
        say(bad.summary())
    if ckpt is not None:
        save_model(ckpt / "model.pt", model, schema)
    return OnlineResult(
        embedding=config.embedding.value,
        budget=config.budget or "1",
        embedding_params=emb.num_parameters(),
        collisionless_params=full,
        partitions=tuple(PartitionResult(**r) for r in progress.records),
        train_seconds=state.train_seconds,
        samples_per_second=state.train_rows / state.train_seconds if state.train_seconds > 0 else math.nan,
        bad_rows=bad.summary(),
        resumed_from=str(found.path) if found is not None else None,
        config=config.model_dump(mode="json"),
        model=model,
    )


def _chain(first: list[StreamPartition], rest: Iterator[StreamPartition]) -> Iterator[StreamPartition]:
    yield from first
    yield from rest


def _describe_rows(name: str, index: np.ndarray, positions: np.ndarray) -> str:
    rows = index[positions]
    shown = ", ".join(str(r) for r in rows[:8].tolist()) + (", ..." if rows.size > 8 else "")
    return f"rows {shown} of partition {name} (0-based, in stream order)"


# -- an Avazu-format stream from the synthetic generator ------------------------------------------------


def _hex8(values: np.ndarray) -> pl.Series:
    """8-digit lower-case hex strings of a bijective 32-bit scramble of ids < 2^32 (Avazu-like ids)."""
    scrambled = (values.astype(np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    nibbles = ((scrambled[:, None] >> shifts) & np.uint64(0xF)).astype(np.uint8)  # [n, 8]
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return pl.Series(np.ascontiguousarray(digits).view("S8").ravel()).cast(pl.String)


def write_avazu_stream(
    directory: str | Path,
    config: SyntheticConfig,
    partitions: int,
    partition_rows: int,
    first_hour: str = "14102100",
) -> list[Path]:
    """Write the synthetic stream as Avazu-format hour files, one partition per file.

    The 21 raw Avazu categoricals (C1, banner_pos, site_id, ..., C21) take the synthetic features
    C1..C21 in order: the id-like columns (site_id, app_id, device_ip, ...) as 8-digit hex strings, the
    others as integers. `hour` is `YYMMDDHH`, one hour per partition from `first_hour`; `id` is the row
    number. Labels, ID churn and concept drift are the synthetic stream's, so this is an honest
    Avazu-format stream with known drift (the real Avazu sample covers one hour only).

    Args:
        directory: where the files go (created); `<YYMMDDHH>.csv` each, with the Avazu header.
        config: the synthetic stream; it must have exactly 21 categorical features and no numeric.
        partitions: number of hours.
        partition_rows: rows per hour.
        first_hour: the first hour, `YYMMDDHH`.

    Returns:
        The files, in time order.

    Example:
        >>> cards = (7, 7, 4_000, 7_000, 26, 8_000, 500, 36, 100_000, 200_000, 8_000, 5, 4, 2_600, 8, 9,
        ...          435, 4, 68, 172, 60)
        >>> write_avazu_stream("runs/avazu-hours", SyntheticConfig(cardinalities=cards), 12, 100_000)
    """
    from featmux.data.readers.avazu import COLUMNS, STRING_FIELDS

    raw = COLUMNS[3:]
    if len(config.cardinalities) != len(raw) or config.num_numeric:
        raise ValueError(
            f"an Avazu-format stream needs {len(raw)} categorical features ({', '.join(raw)}) and no "
            f"numeric ones; got {len(config.cardinalities)} and {config.num_numeric}"
        )
    start = datetime.datetime.strptime(first_hour, "%y%m%d%H")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(partitions):
        hour = (start + datetime.timedelta(hours=p)).strftime("%y%m%d%H")
        (frame,) = _synthetic_rows(config, p * partition_rows, partition_rows)
        columns = [
            pl.Series("id", np.arange(p * partition_rows, (p + 1) * partition_rows)).cast(pl.String),
            frame.get_column("label").alias("click"),
            pl.repeat(hour, partition_rows, eager=True).alias("hour"),
        ]
        for name, source in zip(raw, config.feature_names, strict=True):
            ids = frame.get_column(source).to_numpy()
            if ids.max(initial=0) >= 1 << 32:
                raise ValueError(f"{source}: ids reach 2^32; use smaller cardinalities or less churn")
            columns.append(_hex8(ids).alias(name) if name in STRING_FIELDS else pl.Series(name, ids))
        path = directory / f"{hour}.csv"
        tmp = directory / f".{hour}.csv.tmp"
        pl.DataFrame(columns).write_csv(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths


# -- reporting -----------------------------------------------------------------------------------------


def _label(result: OnlineResult) -> str:
    if result.embedding == EmbeddingMethod.COLLISIONLESS.value:
        return "collisionless (frozen vocab)"
    return f"{result.embedding} @ {result.budget}"


def progressive_table(results: Sequence[OnlineResult]) -> str:
    """A Markdown table: progressive AUC per partition (rows) and method (columns), then summaries.

    Args:
        results: runs over the same stream.

    Returns:
        The table; the first partition (scored by an untrained model) is marked, and the mean leaves
        out the vocabulary partitions.
    """
    if not results:
        return ""
    first = results[0]
    head = ["partition", "name", "rows", "unseen values", *(_label(r) for r in results)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    warmup = int(first.config.get("vocabulary_partitions", 1))
    for i, part in enumerate(first.partitions):
        aucs = [f"{r.partitions[i].auc:.4f}" if i < len(r.partitions) else "" for r in results]
        mark = " (vocabulary)" if i < warmup else ""
        lines.append(
            f"| {i}{mark} | {part.name} | {part.rows:,} | {part.unseen_share:.1%} | "
            + " | ".join(aucs)
            + " |"
        )
    blank = "| | | |"
    lines.append(
        f"| **mean AUC, partitions {warmup}+** {blank} "
        + " | ".join(f"**{r.mean_auc():.4f}**" for r in results)
        + " |"
    )
    tail = max(1, len(first.partitions) // 4)
    lines.append(
        f"| mean AUC, last {tail} partitions {blank} "
        + " | ".join(f"{r.mean_auc(len(r.partitions) - tail):.4f}" for r in results)
        + " |"
    )
    lines.append(
        f"| embedding parameters {blank} " + " | ".join(f"{r.embedding_params:,}" for r in results) + " |"
    )
    lines.append(
        f"| training rows/s {blank} " + " | ".join(f"{r.samples_per_second:,.0f}" for r in results) + " |"
    )
    return "\n".join(lines)


def plot_progressive(results: Sequence[OnlineResult], path: str | Path, title: str) -> Path:
    """Plot progressive AUC per partition for each run, above the share of unseen values.

    Args:
        results: runs over the same stream.
        path: the PNG to write.
        title: the figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    for r in results:
        x = [p.index for p in r.partitions]
        top.plot(
            x,
            [p.auc for p in r.partitions],
            marker="o",
            markersize=3,
            label=f"{_label(r)} ({r.embedding_params:,} params)",
        )
    warmup = int(results[0].config.get("vocabulary_partitions", 1)) if results else 1
    for axis in (top, bottom):
        axis.axvspan(-0.5, warmup - 0.5, color="0.92", zorder=0)
    top.text(-0.45, 0.9, "vocab.\nuntrained", transform=top.get_xaxis_transform(), fontsize=7)
    top.set_ylabel("progressive AUC (before training on it)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    top.set_title(textwrap.fill(title, 110), fontsize=9)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    aucs = [p.auc for r in results for p in r.partitions[warmup:] if not math.isnan(p.auc)]
    if aucs:
        low, high = min(aucs), max(aucs)
        top.set_ylim(low - 0.1 * (high - low + 0.01), high + 0.1 * (high - low + 0.01))
    if results:
        parts = results[0].partitions
        bottom.bar([p.index for p in parts], [100 * p.unseen_share for p in parts], color="0.6")
    bottom.set_ylabel("% values unseen\nin frozen vocab")
    bottom.set_xlabel("partition (time order)")
    bottom.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- benchmark: several methods over one stream ---------------------------------------------------------


class AvazuStreamSpec(BaseModel):
    """An Avazu-format stream to generate before the runs (see `write_avazu_stream`).

    Args:
        directory: where the hour files go (relative to the repository root).
        partitions: hours.
        partition_rows: rows per hour.
        first_hour: `YYMMDDHH`.
        synthetic: `SyntheticConfig` fields (21 cardinalities, churn, drift, seed).

    Example:
        >>> AvazuStreamSpec(directory="runs/avazu-hours", partitions=12, partition_rows=100_000)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path
    partitions: int = Field(ge=1)
    partition_rows: int = Field(ge=1)
    first_hour: str = "14102100"
    synthetic: dict[str, Any] = Field(default_factory=dict)


class OnlineBenchmark(BaseModel):
    """Several embedding methods over one stream (a YAML file; unknown keys are errors).

    Args:
        name: names the result files.
        description: what the benchmark shows.
        methods: embedding methods to compare.
        budgets: budgets of hashing and unified ("1" = the frozen collisionless size); collisionless
            has one size.
        settings: `OnlineConfig` keys shared by every run (paths relative to the repository root).
        avazu_stream: generate this Avazu-format stream first (then point `settings.data` at it).

    Example:
        >>> bench = OnlineBenchmark.from_yaml("benchmarks/configs/online/online_synthetic.yaml")
        >>> bench.configs(Path("runs/x"))
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    methods: list[EmbeddingMethod] = Field(default_factory=lambda: list(EmbeddingMethod))
    budgets: list[str] = Field(default_factory=lambda: ["1"])
    settings: dict[str, Any] = Field(default_factory=dict)
    avazu_stream: AvazuStreamSpec | None = None
    root: Path = Path(".")

    @classmethod
    def from_yaml(cls, path: str | Path) -> OnlineBenchmark:
        """Load a benchmark YAML; relative paths in it are taken from the repository root above it."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping")
        return cls(**data, root=_repo_root(Path(path)))

    def configs(self, work: Path) -> list[OnlineConfig]:
        """One validated `OnlineConfig` per (method, budget), checkpointing under `work`."""
        out = []
        settings = dict(self.settings)
        if settings.get("data") is not None and not Path(settings["data"]).is_absolute():
            settings["data"] = self.root / settings["data"]
        for method in self.methods:
            budgets = ["1"] if method is EmbeddingMethod.COLLISIONLESS else self.budgets
            for budget in budgets:
                tag = f"{method.value}-{budget.replace('/', '_')}"
                out.append(
                    OnlineConfig(
                        **settings,
                        embedding=method,
                        budget=None if method is EmbeddingMethod.COLLISIONLESS else budget,
                        checkpoint_dir=work / self.name / tag,
                        resume=True,
                    )
                )
        return out


def _repo_root(path: Path) -> Path:
    start = path.resolve().parent
    return next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), start)


def run_online_benchmark(
    path: str | Path,
    out: str | Path,
    work: str | Path = "runs/online",
    log: Callable[[str], None] | None = None,
) -> list[OnlineResult]:
    """Run every method of a benchmark YAML over its stream; write `<name>.json`, `.md` and `.png`.

    Runs checkpoint under `work` and resume: an interrupted benchmark continues where it stopped.

    Args:
        path: the benchmark YAML (see `OnlineBenchmark`).
        out: where the results go.
        work: checkpoints and generated streams (not results).
        log: progress lines.

    Returns:
        One result per (method, budget).
    """
    say = log or (lambda _m: None)
    bench = OnlineBenchmark.from_yaml(path)
    if bench.avazu_stream is not None:
        spec = bench.avazu_stream
        directory = spec.directory if spec.directory.is_absolute() else bench.root / spec.directory
        marker = directory / ".stream.json"
        wanted = spec.model_dump(mode="json")
        if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
            say(f"writing the Avazu-format stream to {directory}")
            write_avazu_stream(
                directory,
                SyntheticConfig(**spec.synthetic),
                spec.partitions,
                spec.partition_rows,
                spec.first_hour,
            )
            _write_json(marker, wanted)
    results, seconds = [], []
    for config in bench.configs(Path(work)):
        say(f"== {config.embedding.value} budget {config.budget or '1'}")
        started = time.perf_counter()
        result = run_online(config, log=say)
        seconds.append(time.perf_counter() - started)
        say(f"   mean progressive AUC {result.mean_auc():.5f} ({seconds[-1]:.0f} s)")
        results.append(result)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_json = out / f"{bench.name}.json"
    _write_json(
        results_json,
        {
            "benchmark": bench.model_dump(mode="json", exclude={"root"}),
            "command": f"python -m featmux.training.online {path} {out}",
            "environment": environment(),
            "results": [r.as_dict() | {"wall_seconds": t} for r, t in zip(results, seconds, strict=True)],
        },
    )
    write_online_report(results_json)
    return results


def load_online_results(path: str | Path) -> tuple[dict[str, Any], list[OnlineResult]]:
    """Read a benchmark's `<name>.json` back: (its JSON, the results without models).

    Args:
        path: the file `run_online_benchmark` wrote.
    """
    data = json.loads(Path(path).read_text())
    results = []
    for entry in data["results"]:
        values = {f.name: entry[f.name] for f in dataclasses.fields(OnlineResult) if f.name in entry}
        values["partitions"] = tuple(PartitionResult(**p) for p in entry["partitions"])
        results.append(OnlineResult(**values))
    return data, results


def write_online_report(path: str | Path) -> tuple[Path, Path]:
    """Write `<name>.md` (table) and `<name>.png` (plot) beside a benchmark's `<name>.json`.

    Args:
        path: the JSON `run_online_benchmark` wrote.

    Returns:
        The table and plot paths.
    """
    path = Path(path)
    data, results = load_online_results(path)
    bench, env = data["benchmark"], data["environment"]
    description = bench.get("description", "").strip()
    seconds = [entry.get("wall_seconds", math.nan) for entry in data["results"]]
    runs = ", ".join(f"{_label(r)} {t:.0f} s" for r, t in zip(results, seconds, strict=True))
    table_path = path.with_suffix(".md")
    table_path.write_text(
        f"# {bench['name']}\n\n{description}\n\n"
        "Progressive validation: each partition is scored by the model trained on the partitions before "
        "it, then trained on. Partition 0 is scored by the untrained model and is left out of the means.\n\n"
        f"{progressive_table(results)}\n\nProduced by `{data.get('command', 'run_online_benchmark')}` "
        f"(torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}, {env['cores']} cores); "
        f"wall time per run: {runs}.\n"
    )
    title = f"{bench['name']}: {description.splitlines()[0] if description else ''}"
    return table_path, plot_progressive(results, path.with_suffix(".png"), title)


if __name__ == "__main__":  # python -m featmux.training.online <benchmark.yaml> <out_dir> [work_dir]
    import sys

    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m featmux.training.online BENCHMARK.yaml OUT_DIR [WORK_DIR]")
    run_online_benchmark(sys.argv[1], sys.argv[2], *sys.argv[3:], log=lambda m: print(m, flush=True))
