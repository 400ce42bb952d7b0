"""The online-training loop (`run_online`): score each partition (progressive validation), then train."""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from featmux.data.cache import EncodedDataset, chunk_to_batch
from featmux.data.encoded import EncodedChunk, encode_frame
from featmux.data.errors import BadRowPolicy, BadRows
from featmux.embeddings import Vocabulary, build_embedding, check_features, collisionless_parameters
from featmux.features import Schema
from featmux.models import CTRModel, build_model
from featmux.training.checkpoint import (
    CheckpointError,
    build_from_spec,
    load_resumable,
    previous_path,
    save_model,
)
from featmux.training.metrics import Metrics, binary_metrics
from featmux.training.online.config import OnlineConfig
from featmux.training.online.results import OnlineResult, PartitionResult, write_json
from featmux.training.online.stream import StreamPartition, iter_partitions
from featmux.training.trainer import RESUMABLE_KEYS, Trainer, epoch_batches

RESULTS_FILE = "progressive.json"
"""Written to the checkpoint directory after every partition: the results so far."""
PARTITION_SHARD_ROWS = 1 << 16
"""Rows per on-disk shard of a partition being trained on (the most held in memory while writing it)."""


@dataclass
class _Progress:
    """Stream position and results so far; stored in every checkpoint (entry "online")."""

    partition: int = 0  # the partition being (or next to be) processed
    pass_: int = 0
    batch: int = 0  # next batch of the pass
    loss_sum: float = 0.0  # training loss of the current partition so far
    loss_batches: int = 0
    names: list[str] = field(default_factory=list)  # names of the partitions reached, for stream checks
    stamps: list[str] = field(default_factory=list)  # their content stamps (StreamPartition.stamp)
    records: list[dict[str, Any]] = field(default_factory=list)  # PartitionResult fields
    bad_counts: dict[str, int] = field(default_factory=dict)  # bad rows skipped in finished partitions
    bad_examples: dict[str, str] = field(default_factory=dict)


def _encode(frames: Iterable[pl.DataFrame], schema: Schema) -> EncodedChunk:
    """Frames encoded into one in-memory chunk (small partitions, tests)."""
    frames = list(frames)
    chunks = [encode_frame(f, schema) for f in frames if f.height]
    if not chunks:
        return encode_frame(pl.DataFrame(schema=frames[0].schema) if frames else _empty(schema), schema)
    return EncodedChunk.concat(chunks)


class _StoredPartition:
    """A partition's encoded rows on disk: written frame by frame as the source yields them, read
    back through memory-mapped shards. Neither the raw nor the encoded partition is ever whole in
    memory, only a shard being written (`PARTITION_SHARD_ROWS` rows) and the rows a batch takes.

    Args:
        frames: the partition's raw frames, in stream order.
        schema: their schema.
        directory: where the shards go (replaced if it exists).
    """

    def __init__(self, frames: Iterable[pl.DataFrame], schema: Schema, directory: Path) -> None:
        chunks = (encode_frame(f, schema) for f in frames if f.height)
        dataset = EncodedDataset.write(directory, schema, chunks, shard_rows=PARTITION_SHARD_ROWS)
        self.directory = directory
        self.shards = [dataset.shard(i, mmap=True) for i in range(dataset.num_shards)]
        self._bounds = np.cumsum([0, *dataset.shard_rows])

    def __len__(self) -> int:
        return int(self._bounds[-1])

    @property
    def labels(self) -> np.ndarray:
        """float32 [n]: every row's label (the one whole-partition array; 4 bytes a row)."""
        return np.concatenate([s.labels for s in self.shards]) if self.shards else np.zeros(0, np.float32)

    def take(self, index: np.ndarray) -> EncodedChunk:
        """The rows at `index` (in that order), gathered from the shards they live in."""
        where = np.searchsorted(self._bounds, index, side="right") - 1  # [k] shard of each row
        first = int(where[0]) if where.size else 0
        if where.size == 0 or (where == first).all():
            return self.shards[first].take(index - self._bounds[first])
        order = np.argsort(where, kind="stable")
        sorted_where, sorted_index = where[order], index[order]
        parts = [
            self.shards[s].take(sorted_index[sorted_where == s] - self._bounds[s]) for s in np.unique(where)
        ]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return EncodedChunk.concat(parts).take(inverse)

    def remove(self) -> None:
        """Delete the shards (the partition is done)."""
        self.shards = []
        shutil.rmtree(self.directory, ignore_errors=True)


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
    missing, total = _unseen_counts(chunk, schema, keys)
    return missing / total if total else float("nan")


def _unseen_counts(chunk: EncodedChunk, schema: Schema, keys: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(values not in `keys`, all values) of a chunk's categorical columns."""
    columns = [(chunk.ids[:, i], keys[f.name]) for i, f in enumerate(schema.univalent)]
    columns += [(chunk.bags[j].values, keys[f.name]) for j, f in enumerate(schema.multivalent)]
    total = sum(v.size for v, _ in columns)
    missing = 0
    for values, known in columns:
        if known.size == 0:
            missing += values.size
            continue
        pos = np.minimum(np.searchsorted(known, values), known.size - 1)
        missing += int(np.count_nonzero(known[pos] != values))
    return missing, total


@torch.no_grad()
def _progressive(
    model: CTRModel, chunk: EncodedChunk | _StoredPartition, batch_size: int
) -> tuple[Metrics, int]:
    """AUC/logloss of `model` on `chunk`, and how many rows got a NaN/Inf prediction (left out).
    Batches go where the model lives (`--device cuda`)."""
    n = len(chunk)
    if n == 0:
        return Metrics(float("nan"), float("nan"), 0), 0
    device = next(model.parameters()).device
    model.eval()
    parts = []
    for start in range(0, n, batch_size):
        batch = chunk_to_batch(chunk.take(np.arange(start, min(n, start + batch_size)))).to(device)
        parts.append(model(batch.sparse, batch.dense).float().cpu().numpy())
    model.train()
    logits = np.concatenate(parts)
    labels = chunk.labels
    finite = np.isfinite(logits)
    if finite.all():
        return binary_metrics(labels, logits), 0
    return binary_metrics(labels[finite], logits[finite]), int(n - finite.sum())


def run_online(config: OnlineConfig, log: Callable[[str], None] | None = None) -> OnlineResult:
    """Train on a stream partition by partition, with progressive validation (`featmux.training.online`).

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
    warm: dict[int, tuple[_StoredPartition, Counter]] = {}
    if ckpt is not None:  # partitions being trained on go beside the checkpoints (one filesystem)
        ckpt.mkdir(parents=True, exist_ok=True)
        for stale in ckpt.glob(".featmux-stream-*"):  # left by a run that was killed
            shutil.rmtree(stale, ignore_errors=True)
    scratch = tempfile.TemporaryDirectory(prefix=".featmux-stream-" if ckpt else "featmux-stream-", dir=ckpt)
    store = Path(scratch.name)
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
        bad.counts.update(progress.bad_counts)  # the partitions not read again keep their counts
        bad.examples.update(progress.bad_examples)
        partitions = iter(stream)
    else:
        partitions = iter(stream)
        vocabulary = Vocabulary(schema.feature_names)
        first: list[StreamPartition] = []
        for part in partitions:
            rows, counted = _read(part, schema, bad, store)
            warm[part.index] = (rows, counted)
            first.append(part)
            for shard in rows.shards:
                for i, f in enumerate(schema.univalent):
                    vocabulary.update(f.name, shard.ids[:, i])
                for j, f in enumerate(schema.multivalent):
                    vocabulary.update(f.name, shard.bags[j].values)
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
        f"online {config.dataset}: {config.embedding} embedding, {emb.num_parameters():,} parameters "
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
        if part.index < len(progress.names):
            _check_unchanged(part, progress)
        if part.index < progress.partition:
            continue  # done before the restart: not even read where the source allows
        rows, counted = warm.pop(part.index) if part.index in warm else _read(part, schema, bad, store)
        n = len(rows)
        if len(progress.records) <= part.index:
            metrics, nonfinite = _progressive(model, rows, config.eval_batch_size)
            counts = [_unseen_counts(shard, schema, keys) for shard in rows.shards]
            total = sum(t for _, t in counts)
            unseen = sum(m for m, _ in counts) / total if total else float("nan")
            progress.names.append(part.name)
            progress.stamps.append(part.stamp)
            record = PartitionResult(part.index, part.name, n, metrics.auc, metrics.logloss, unseen)
            progress.records.append(dataclasses.asdict(record) | {"nonfinite_predictions": nonfinite})
            if nonfinite:
                say(f"partition {part.index} ({part.name}): {nonfinite} row(s) got a NaN/Inf prediction")
            say(
                f"partition {part.index} ({part.name}): {n:,} rows, progressive AUC {metrics.auc:.5f} "
                f"logloss {metrics.logloss:.5f}, {unseen:.1%} of values unseen in the frozen vocabulary"
            )
        batches = epoch_batches(n, batch_size)  # a last batch of one row is dropped (BatchNorm)
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
                batch = chunk_to_batch(rows.take(index))
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
        progress.bad_counts = dict(Counter(progress.bad_counts) + counted)
        progress.bad_examples = dict(bad.examples)
        rows.remove()
        save()
        if ckpt is not None:
            write_json(ckpt / RESULTS_FILE, progress.records)
    scratch.cleanup()
    if bad.skipped:
        say(bad.summary())
    if ckpt is not None:
        save_model(ckpt / "model.pt", model, schema)
    return OnlineResult(
        embedding=config.embedding,
        budget=config.budget or "1",
        embedding_params=emb.num_parameters(),
        collisionless_params=full,
        partitions=tuple(PartitionResult(**r) for r in progress.records),
        train_seconds=state.train_seconds,
        samples_per_second=state.train_rows / state.train_seconds if state.train_seconds > 0 else math.nan,
        bad_rows=bad.summary(),
        resumed_from=str(found.path) if found is not None else None,
        config=config.model_dump(mode="json"),
        embedding_bytes=emb.serving_bytes(),
        model=model,
    )


def _read(
    part: StreamPartition, schema: Schema, bad: BadRows, store: Path
) -> tuple[_StoredPartition, Counter]:
    """A partition's encoded rows (on disk under `store`), and the bad rows its reading skipped."""
    before = Counter(bad.counts)
    rows = _StoredPartition(part.load(), schema, store / f"partition-{part.index:06d}")
    return rows, Counter(bad.counts) - before


def _check_unchanged(part: StreamPartition, progress: _Progress) -> None:
    """A partition the checkpoint has results for must still be the one they came from."""
    i = part.index
    if progress.names[i] != part.name:
        raise CheckpointError(
            f"the stream changed: the checkpoint's partition {i} is {progress.names[i]!r}, "
            f"the stream's is {part.name!r}"
        )
    if i < len(progress.stamps) and progress.stamps[i] != part.stamp:
        raise CheckpointError(
            f"the stream changed: partition {i} ({part.name}) is not the content the checkpoint "
            f"trained on (stamp {progress.stamps[i]!r}, now {part.stamp!r}): resume only the same "
            "stream, or use another checkpoint_dir"
        )


def _chain(first: list[StreamPartition], rest: Iterator[StreamPartition]) -> Iterator[StreamPartition]:
    yield from first
    yield from rest


def _describe_rows(name: str, index: np.ndarray, positions: np.ndarray) -> str:
    rows = index[positions]
    shown = ", ".join(str(r) for r in rows[:8].tolist()) + (", ..." if rows.size > 8 else "")
    return f"rows {shown} of partition {name} (0-based, in stream order)"
