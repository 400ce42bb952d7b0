"""Embedding methods behind one interface (`FeatureEmbedding`: SparseFeatures -> [B, S, D]).

`build_embedding` makes any method at a given parameter budget; `embedding_from_config` rebuilds a
layer from the plain config stored in a checkpoint (its learned state then comes from the state_dict).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, unique
from typing import Any

import torch

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.budget import Budget, collisionless_rows, split_rows
from featmux.embeddings.collisionless import CollisionlessEmbedding
from featmux.embeddings.hashing import HashingEmbedding
from featmux.embeddings.unified import UnifiedEmbedding, UnifiedEmbeddingConfig
from featmux.embeddings.vocabulary import FeatureVocabulary, Vocabulary
from featmux.features import CategoricalFeature


@unique
class EmbeddingMethod(Enum):
    COLLISIONLESS = "collisionless"
    HASHING = "hashing"
    UNIFIED = "unified"


@dataclass(frozen=True)
class EmbeddingSpec:
    """What embedding layer to build; `build_embedding` turns it into a module.

    Args:
        method: collisionless, hashing or unified.
        embedding_dim: D, width of one slot (one chunk in Unified Embedding).
        budget: parameters for the tables; None means the collisionless size (fraction 1).
        min_count: values seen fewer times in training are out-of-vocabulary (collisionless and
            private tables) and are not counted in cardinalities.
        num_tables: T sub-tables of the unified table.
        chunks: K_f per feature for unified; unlisted features get `default_chunks`.
        default_chunks: K for unlisted features.
        private_max_cardinality: unified only: features with at most this many values keep a private
            collisionless table (0: none).
    """

    method: EmbeddingMethod
    embedding_dim: int
    budget: Budget | None = None
    min_count: int = 1
    num_tables: int = 1
    chunks: Mapping[str, int] = field(default_factory=dict)
    default_chunks: int = 1
    private_max_cardinality: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", dict(self.chunks))
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if (
            self.method is EmbeddingMethod.COLLISIONLESS
            and self.budget is not None
            and self.budget != Budget(1.0)
        ):
            raise ValueError(
                "the collisionless table has a fixed size (one row per value); use min_count to shrink it"
            )
        if self.method is not EmbeddingMethod.UNIFIED and (
            self.chunks or self.default_chunks != 1 or self.num_tables != 1 or self.private_max_cardinality
        ):
            raise ValueError("chunks, num_tables and private tables are options of the unified method only")


def check_features(spec: EmbeddingSpec, features: Sequence[CategoricalFeature]) -> None:
    """Options that name features (chunks) must name features that exist.

    Args:
        spec: the embedding to build.
        features: the categorical features of the data.

    Raises:
        ValueError: naming the unknown features and listing the valid ones.
    """
    valid = [f.name for f in features]
    unknown = sorted(set(spec.chunks) - set(valid))
    if unknown:
        raise ValueError(f"chunks name unknown feature(s) {unknown}; the features are {valid}")


def collisionless_parameters(
    features: Sequence[CategoricalFeature], vocabulary: Vocabulary, embedding_dim: int, min_count: int = 1
) -> int:
    """Parameters of the collisionless layer: (|V_f| + 1) * D summed over features."""
    return (
        collisionless_rows({f.name: vocabulary.cardinality(f.name, min_count) for f in features})
        * embedding_dim
    )


def build_embedding(
    features: Sequence[CategoricalFeature],
    spec: EmbeddingSpec,
    vocabulary: Vocabulary | None,
    device: torch.device | None = None,
) -> FeatureEmbedding:
    """Build the layer `spec` describes, at its budget.

    Args:
        features: the categorical features.
        spec: method, dimension and budget.
        vocabulary: value counts of the training split; needed by collisionless, hashing, fractional
            budgets and private tables (unified with an absolute budget needs none).
        device: where to allocate.
    """
    dim = spec.embedding_dim
    check_features(spec, features)
    if spec.method is EmbeddingMethod.COLLISIONLESS:
        if vocabulary is None:
            raise ValueError("the collisionless table needs a vocabulary")
        return CollisionlessEmbedding.from_vocabulary(features, vocabulary, dim, spec.min_count, device)
    budget = spec.budget or Budget(fraction=1.0)
    full = (
        collisionless_parameters(features, vocabulary, dim, spec.min_count)
        if vocabulary is not None
        else None
    )
    params = budget.parameters(full, dim)
    if full is not None and params > full:
        if spec.method is EmbeddingMethod.HASHING:
            what = "per-feature hashing caps each feature at its vocabulary, so the excess is not used"
        else:
            what = "more shared rows than distinct training values (meant for collision studies?)"
        warnings.warn(
            f"budget {budget} is {params:,} parameters, above the collisionless size {full:,} "
            f"({params / full:.3g}x): {what}; a budget of at most 1 (the collisionless size) avoids this",
            UserWarning,
            stacklevel=2,
        )
    if spec.method is EmbeddingMethod.HASHING:
        if vocabulary is None:
            raise ValueError("per-feature hashing splits its rows by vocabulary size: it needs a vocabulary")
        caps = [max(1, vocabulary.cardinality(f.name, spec.min_count)) for f in features]
        rows = split_rows(max(len(features), params // dim), caps)
        return HashingEmbedding(
            features, dim, {f.name: r for f, r in zip(features, rows, strict=True)}, device
        )
    private: dict[str, int] = {}
    if spec.private_max_cardinality > 0:
        if vocabulary is None:
            raise ValueError("private tables for small features need a vocabulary")
        for f in features:
            n = vocabulary.cardinality(f.name, spec.min_count)
            if n <= spec.private_max_cardinality and f.name not in spec.chunks:
                private[f.name] = n
    layer = UnifiedEmbedding.from_budget(
        features, dim, params, spec.num_tables, spec.chunks, spec.default_chunks, private, device
    )
    if vocabulary is not None:
        layer.fill_private_vocabulary(vocabulary, spec.min_count)
    return layer


def embedding_from_config(
    features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None = None
) -> FeatureEmbedding:
    """Rebuild a layer (untrained; load its state_dict next) from `FeatureEmbedding.config()`."""
    method = EmbeddingMethod(config["method"])
    dim = int(config["embedding_dim"])
    if method is EmbeddingMethod.COLLISIONLESS:
        return CollisionlessEmbedding(features, dim, config["vocab_sizes"], device)
    if method is EmbeddingMethod.HASHING:
        return HashingEmbedding(features, dim, config["rows"], device)
    unified = UnifiedEmbeddingConfig(
        rows=int(config["rows"]),
        embedding_dim=dim,
        num_tables=int(config["num_tables"]),
        chunks=config.get("chunks", {}),
        default_chunks=int(config.get("default_chunks", 1)),
        private=config.get("private", {}),
    ).with_placement(int(config.get("placement", 1)))  # configs without it predate layout version 2
    return UnifiedEmbedding(features, unified, device)


__all__ = [
    "Budget",
    "CollisionlessEmbedding",
    "EmbeddingMethod",
    "EmbeddingSpec",
    "FeatureEmbedding",
    "FeatureVocabulary",
    "HashingEmbedding",
    "TableEmbedding",
    "UnifiedEmbedding",
    "UnifiedEmbeddingConfig",
    "Vocabulary",
    "build_embedding",
    "check_features",
    "collisionless_parameters",
    "embedding_from_config",
]
