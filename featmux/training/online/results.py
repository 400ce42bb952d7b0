"""What an online run measured: progressive validation per partition (`PartitionResult`) and per run
(`OnlineResult`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featmux.models import CTRModel


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
        embedding_bytes: bytes of the served embedding layer, the form progressive validation scored
            (quantized with --precision or unified's qat_bits, pruned with --prune; None in results
            written before it was recorded).
        fp32: {"embedding_bytes": bytes of the fp32 master tables} when the served form differs.
        label: the benchmark arm's name ("" outside a benchmark: the method names the run).
        model: the trained model, fp32 master tables (not part of `as_dict`; the run's `model.pt`
            holds the served form).

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
    embedding_bytes: int | None = None
    fp32: dict[str, int] | None = None
    label: str = ""
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


def write_json(path: Path, payload: Any) -> None:
    """Write `payload` as JSON through a fixed temporary name, `.<name>.tmp` then rename: a write killed
    half-way leaves the old file, and its temporary file is replaced by the next write."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
