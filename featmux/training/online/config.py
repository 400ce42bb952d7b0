"""The settings of one online-training run (`OnlineConfig`); see `featmux.training.online`."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field, model_validator

from featmux.data.synthetic import SyntheticConfig
from featmux.embeddings import PruneMethod
from featmux.training.config import TrainConfig
from featmux.training.run_config import RunConfig

SYNTHETIC = "synthetic"

# fields a resumed run may change: they do not change the results computed so far (a run that stopped at a
# NaN loss or a bad row has skipped none yet, so it may go on with on_nonfinite=skip / skip_bad_rows)
_VOLATILE = frozenset(
    {
        "threads",
        "device",
        "checkpoint_dir",
        "resume",
        "partitions",
        "checkpoint_every_steps",
        "on_nonfinite",
        "skip_bad_rows",
    }
)


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
        if self.embedding_spec().implementation.staged:
            raise ValueError(f"{self.embedding} trains in stages over a fixed split: it has no online form")
        if self.prune_method is not PruneMethod.MAGNITUDE:
            raise ValueError("online runs prune by magnitude only: give no --prune-method pep")
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
            **self.train_options(),
            epochs=self.passes,
            lr_decay=1.0,
            max_grad_norm=self.max_grad_norm,
            eval_batch_size=self.eval_batch_size,
            progress=False,
        )

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide a run's results (a resumed run must have the same)."""
        return self.model_dump(mode="json", exclude=set(_VOLATILE))
