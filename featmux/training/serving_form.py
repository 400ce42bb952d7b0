"""The form a run's embedding tables are served (and scored) in: as trained, quantized or pruned.

Batch and online runs agree on it: `--precision fp16|int8|int4` quantizes the trained tables,
`--prune S` stores them sparse, and a layer trained for a precision (Unified Embedding's `qat_bits`)
is served at that precision without a flag. `--qat` makes the tables train and validate on the rows
`--precision` will serve. A run reports the served bytes as `embedding_bytes` and the fp32 master
tables under `fp32`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Self

from featmux.embeddings import (
    FeatureEmbedding,
    LearnedPruningEmbedding,
    Precision,
    prune_embedding,
    quantize_embedding,
)
from featmux.embeddings.precision import levels, served_bytes
from featmux.training.run_config import RunConfig


def make_quantization_aware(config: RunConfig, embedding: FeatureEmbedding) -> None:
    """With `--qat`, read every table row as `--precision` will serve it (a no-op otherwise).

    Args:
        config: the run's settings.
        embedding: the layer to train (changed in place).
    """
    if config.qat:
        embedding.set_quantization_aware(levels(config.precision))


@dataclass(frozen=True)
class ServingForm:
    """How a trained layer is served: at `precision`, or pruned to `prune` sparsity (not both).

    Args:
        precision: the tables' served precision (fp32: as trained, unless pruned).
        prune: the share of table entries dropped and stored sparse (0: none).

    Example:
        >>> form = ServingForm.of(config, model.embedding)
        >>> served = form.apply(model.embedding) if form.changes else model.embedding
    """

    precision: Precision = Precision.FP32
    prune: float = 0.0

    @classmethod
    def of(cls, config: RunConfig, embedding: FeatureEmbedding) -> Self:
        """The form `config` asks for; a layer trained for a precision (`qat_bits`) is served at it."""
        trained_for = Precision(embedding.config().get("qat", "fp32"))
        precision = config.precision if config.precision is not Precision.FP32 else trained_for
        return cls(precision, config.prune)

    @property
    def changes(self) -> bool:
        """Whether the served tables differ from the trained fp32 ones."""
        return self.precision is not Precision.FP32 or self.prune > 0

    def apply(self, embedding: FeatureEmbedding) -> FeatureEmbedding:
        """The layer in this form; its tables' float weights are replaced in place (copy it to keep them)."""
        if self.prune > 0 and isinstance(embedding, LearnedPruningEmbedding):
            return embedding.pruned(self.prune)  # PEP: the learned zeros, cut to `prune` where short of it
        if self.prune > 0:
            return prune_embedding(embedding, self.prune)
        return quantize_embedding(embedding, self.precision)

    def served_bytes(self, embedding: FeatureEmbedding) -> int:
        """`memory_bytes()` of the layer in this form (the layer itself is left as it is)."""
        if self.prune > 0:  # CSR sizes are counted from the pruned tensors
            return self.apply(copy.deepcopy(embedding)).memory_bytes()
        return served_bytes(embedding, self.precision)

    def describe(self) -> str:
        """A few words for log lines: "int8" or "pruned to 0.5 sparsity"."""
        return f"pruned to {self.prune:g} sparsity" if self.prune > 0 else self.precision.value
