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

Serving forms: with `precision` (fp16, int8, int4), `prune`, or Unified Embedding's `qat_bits`, each
partition is scored by the tables as they would be served (a quantized or pruned copy of the fp32
tables, which go on training; `qat` trains them on the rows they will serve), `model.pt` holds that
form, and the result reports its bytes (`embedding_bytes`; the fp32 tables' under `fp32`).

Memory: a partition is never held whole. Its frames are read lazily in the source's chunks (a
directory's file, a synthetic range, a run of one file's `partition_column`), encoded into shards on
disk (under `checkpoint_dir`, or a temporary directory) and trained from memory-mapped shards; only a
shard being written and the rows of a batch are in memory. Limit: a single file cut by
`partition_rows` is still read one block (one partition) per frame.

A resumed run checks each partition it has results for against the stream: its name and, for files,
a stamp of the file's size and modification time (a rewritten partition is an error, not stale
results); bad-row counts of the partitions already done are kept.

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

Modules: `config` (`OnlineConfig`), `stream` (partitions), `loop` (`run_online`), `results`
(`PartitionResult`, `OnlineResult`), `report` (table, plot), `avazu_stream` (`write_avazu_stream`),
`benchmark` (`run_online_benchmark`; also `python -m featmux.training.online BENCHMARK.yaml OUT_DIR`).
"""

from featmux.training.online.avazu_stream import write_avazu_stream
from featmux.training.online.benchmark import (
    AvazuStreamSpec,
    OnlineArm,
    OnlineBenchmark,
    run_online_benchmark,
)
from featmux.training.online.config import SYNTHETIC, OnlineConfig
from featmux.training.online.loop import RESULTS_FILE, run_online, unseen_share
from featmux.training.online.report import (
    load_online_results,
    plot_progressive,
    progressive_table,
    seed_summary,
    write_online_report,
)
from featmux.training.online.results import OnlineResult, PartitionResult
from featmux.training.online.stream import StreamPartition, iter_partitions

__all__ = [
    "RESULTS_FILE",
    "SYNTHETIC",
    "AvazuStreamSpec",
    "OnlineArm",
    "OnlineBenchmark",
    "OnlineConfig",
    "OnlineResult",
    "PartitionResult",
    "StreamPartition",
    "iter_partitions",
    "load_online_results",
    "plot_progressive",
    "progressive_table",
    "run_online",
    "run_online_benchmark",
    "seed_summary",
    "unseen_share",
    "write_avazu_stream",
    "write_online_report",
]
