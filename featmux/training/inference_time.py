"""Inference time of a trained model: its forward on one batch of held-out rows, in the form it serves.

`run_experiment` calls `time_inference` after the serving form is applied (quantized or pruned tables
are what serves), so every result, from `featmux train --out` and from each benchmark cell, carries
`inference: {rows, median_ms, repeats, threads, ...}`. The batch is built before the clock starts: the
number is the model's forward (eval mode, `torch.no_grad()`), not the data path's. Two warm-up calls
come first; then up to `repeats` timed calls, cut short (never below 3) once the whole measurement,
warm-up included, passes `max_seconds`: it costs at most about max(max_seconds + one call, 5 calls),
0.5 s for a model whose forward takes under ~40 ms.

Example:
    >>> timing = time_inference(model, data.test)
    >>> timing.median_ms, timing.rows
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # the report reads INFERENCE_ROWS without importing the models
    from featmux.data.cache import EncodedDataset
    from featmux.models import CTRModel

INFERENCE_ROWS = 4096
"""Rows of the timed batch (fewer when the split is smaller; the result's `rows` says how many)."""


@dataclass(frozen=True)
class InferenceTiming:
    """The median time of one forward call on one batch.

    Args:
        rows: rows in the timed batch (`INFERENCE_ROWS`, or the whole split when it is smaller).
        median_ms: median wall time of the timed calls, in milliseconds.
        repeats: timed calls made (after the warm-up calls).
        threads: torch's intra-op thread count during the calls.
        split: the split the batch came from ("test", or "valid" without a test split).
        seconds: wall time of the whole measurement, warm-up included (what it added to the run).

    Example:
        >>> InferenceTiming(4096, 12.5, 10, 1, "test", 0.14).as_dict()["median_ms"]
        12.5
    """

    rows: int
    median_ms: float
    repeats: int
    threads: int
    split: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record a result stores under `inference`."""
        return asdict(self)


def time_inference(
    model: CTRModel,
    dataset: EncodedDataset,
    split: str = "test",
    rows: int = INFERENCE_ROWS,
    repeats: int = 10,
    warmup: int = 2,
    max_seconds: float = 0.5,
) -> InferenceTiming:
    """Median wall time of `model`'s forward on the first `rows` rows of `dataset`.

    Args:
        model: the trained model, in the form it serves; its train/eval mode is restored afterwards.
        dataset: the held-out split the batch is taken from (its stored order).
        split: the split's name, recorded in the result.
        rows: rows in the batch (fewer when `dataset` is smaller).
        repeats: timed calls at most.
        warmup: untimed calls first (allocator, kernel selection, lazy init).
        max_seconds: stop timing once the measurement, warm-up included, took this long (after at
            least 3 timed calls).

    Raises:
        ValueError: an empty dataset, a non-positive `rows` or `repeats`, or a negative `warmup`.
    """
    if rows < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"rows ({rows}) and repeats ({repeats}) must be >= 1, warmup ({warmup}) >= 0")
    batch = next(iter(dataset.batches(rows)), None)
    if batch is None or len(batch) == 0:
        raise ValueError(f"{split} split has no rows to time inference on")
    device = next(model.parameters()).device
    batch = batch.to(device)
    cuda = device.type == "cuda"
    min_repeats = min(3, repeats)
    was_training = model.training
    model.eval()
    seconds: list[float] = []
    started = time.perf_counter()
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(batch.sparse, batch.dense)
            if cuda:
                torch.cuda.synchronize(device)
            while len(seconds) < repeats and (
                len(seconds) < min_repeats or time.perf_counter() - started < max_seconds
            ):
                start = time.perf_counter()
                model(batch.sparse, batch.dense)
                if cuda:  # kernels run asynchronously: wait for them
                    torch.cuda.synchronize(device)
                seconds.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return InferenceTiming(
        rows=len(batch),
        median_ms=statistics.median(seconds) * 1e3,
        repeats=len(seconds),
        threads=torch.get_num_threads(),
        split=split,
        seconds=time.perf_counter() - started,
    )
