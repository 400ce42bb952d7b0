"""Inference time of a trained model: its forward on one batch of held-out rows, in the form it serves.

`run_experiment` calls `time_inference` after the serving form is applied (quantized or pruned tables
are what serves), so every result, from `featmux train --out` and from each benchmark cell, carries
`inference: {rows, median_ms, repeats, threads, ...}`. The batch is built before the clock starts: the
number is the model's forward (eval mode, `torch.no_grad()`), not the data path's. A couple of warm-up
calls come first; then up to `repeats` timed calls, cut short (never below `min_repeats`) once the
timed calls pass `max_seconds`, so a slow model costs well under a second per run.

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
        device: where the model ran ("cpu", "cuda:0").
        split: the split the batch came from ("test", or "valid" without a test split).

    Example:
        >>> InferenceTiming(4096, 12.5, 10, 1, "cpu", "test").as_dict()["median_ms"]
        12.5
    """

    rows: int
    median_ms: float
    repeats: int
    threads: int
    device: str
    split: str

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
        max_seconds: stop timing once the timed calls took this long (after at least 3 of them).

    Raises:
        ValueError: an empty dataset, or a non-positive `rows` or `repeats`.
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
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(batch.sparse, batch.dense)
            if cuda:
                torch.cuda.synchronize(device)
            while len(seconds) < repeats and (len(seconds) < min_repeats or sum(seconds) < max_seconds):
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
        device=str(device),
        split=split,
    )
