"""Embedding methods behind one interface (`FeatureEmbedding`: SparseFeatures -> [B, S, D]).

Each method is one module that registers itself (`featmux.embeddings.registry`): its name, options,
budget solver and rebuild-from-config. `build_embedding` makes any method at a given budget;
`embedding_from_config` rebuilds a layer from the plain config stored in a checkpoint (its learned
state then comes from the state_dict).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.budget import FP32_BYTES, Budget, collisionless_rows
from featmux.embeddings.collisionless import CollisionlessEmbedding
from featmux.embeddings.hashing import HashingEmbedding
from featmux.embeddings.pep import LearnedPruningEmbedding
from featmux.embeddings.precision import Precision, quantize_embedding
from featmux.embeddings.pruning import PruneMethod, prune_embedding, prune_tables
from featmux.embeddings.registry import (
    BudgetTarget,
    BudgetUnit,
    EmbeddingMethod,
    VocabularyStats,
    get_method,
    method_names,
)
from featmux.embeddings.served import ServedEmbedding
from featmux.embeddings.unified import UnifiedEmbedding, UnifiedEmbeddingConfig, UnifiedOptions
from featmux.embeddings.vocabulary import FeatureVocabulary, Vocabulary
from featmux.features import CategoricalFeature, check_shares, row_owners


@dataclass(frozen=True)
class EmbeddingSpec:
    """What embedding layer to build; `build_embedding` turns it into a module.

    Args:
        method: a registered method name (`method_names()`: collisionless, hashing, unified, ...).
        embedding_dim: D, width of one slot (one chunk in Unified Embedding).
        budget: the layer's budget; None means the collisionless size (fraction 1).
        min_count: values seen fewer times in training are out-of-vocabulary (collisionless and
            private tables) and are not counted in cardinalities.
        options: the method's options, a mapping (`embedding_options`) or its options dataclass.

    Example:
        >>> EmbeddingSpec("unified", 16, Budget.parse("1/16"), options={"num_tables": 2})
    """

    method: str
    embedding_dim: int
    budget: Budget | None = None
    min_count: int = 1
    options: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        method = get_method(self.method)
        object.__setattr__(self, "method", method.name)
        object.__setattr__(self, "options", method.parse_options(self.options))
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if not method.budgeted and self.budget is not None and self.budget != Budget(1.0):
            raise ValueError(
                f"the {method.name} table has a fixed size (one row per value); use min_count to shrink it"
            )

    @property
    def implementation(self) -> EmbeddingMethod:
        """The registered method."""
        return get_method(self.method)


def check_features(spec: EmbeddingSpec, features: Sequence[CategoricalFeature]) -> None:
    """Options that name features (e.g. unified's chunks) must name features that exist.

    Args:
        spec: the embedding to build.
        features: the categorical features of the data.

    Raises:
        ValueError: naming the unknown features and listing the valid ones.
    """
    spec.implementation.check_features(spec.options, [f.name for f in features])


def collisionless_parameters(
    features: Sequence[CategoricalFeature], vocabulary: Vocabulary, embedding_dim: int, min_count: int = 1
) -> int:
    """Parameters of the collisionless layer: (|V_f| + 1) * D summed over the features that own rows.

    A feature with `share_with` reads its owner's rows, so shared rows count once (budgets too).
    """
    cards = {f.name: vocabulary.cardinality(f.name, min_count) for f in row_owners(features)}
    return collisionless_rows(cards) * embedding_dim


def check_sharing(method: EmbeddingMethod, features: Sequence[CategoricalFeature]) -> None:
    """Features with `share_with` need a method whose layer can share rows (ValueError otherwise)."""
    check_shares(features)
    sharing = [f.name for f in features if f.share_with is not None]
    if sharing and not method.shares_rows:
        able = sorted(n for n in method_names() if get_method(n).shares_rows)
        raise ValueError(
            f"feature(s) {sharing} share another feature's rows (share_with), which the {method.name} "
            f"embedding does not support; use one of {able}, or turn the sharing off"
        )


def budget_target(
    features: Sequence[CategoricalFeature], spec: EmbeddingSpec, vocabulary: Vocabulary | None
) -> BudgetTarget | None:
    """The budget of `spec` in bytes or parameters (None for fixed-size methods).

    Args:
        features: the categorical features.
        spec: method, dimension and budget.
        vocabulary: value counts of the training split (needed by fractional budgets).
    """
    if not spec.implementation.budgeted:
        return None
    budget = spec.budget or Budget(fraction=1.0)
    full = (
        collisionless_parameters(features, vocabulary, spec.embedding_dim, spec.min_count)
        if vocabulary is not None
        else None
    )
    return budget.target(full, spec.embedding_dim)


def build_embedding(
    features: Sequence[CategoricalFeature],
    spec: EmbeddingSpec,
    vocabulary: Vocabulary | None,
    device: torch.device | None = None,
) -> FeatureEmbedding:
    """Build the layer `spec` describes, at its budget (its method's `solve` picks the knobs).

    Args:
        features: the categorical features.
        spec: method, dimension, budget and the method's options.
        vocabulary: value counts of the training split; needed by collisionless, hashing, fractional
            budgets and private tables (unified with an absolute budget needs none).
        device: where to allocate.
    """
    check_features(spec, features)
    method = spec.implementation
    check_sharing(method, features)
    target = budget_target(features, spec, vocabulary)
    stats = VocabularyStats.of(features, vocabulary, spec.min_count)
    if target is not None and stats.known:
        full = stats.full_rows * spec.embedding_dim
        full = full * FP32_BYTES if target.unit is BudgetUnit.BYTES else full
        if target.amount > full:
            warnings.warn(
                f"budget {spec.budget} is {target}, above the collisionless size {full:,} "
                f"({target.amount / full:.3g}x): {method.above_full_note}; a budget of at most 1 (the "
                "collisionless size) avoids this",
                UserWarning,
                stacklevel=2,
            )
    config = method.solve(features, target, stats, spec.embedding_dim, spec.options)
    layer = method.from_config(features, config, device)
    if vocabulary is not None:
        method.fill(layer, vocabulary, spec.min_count)
    return layer


SERVING_KEYS = ("precision", "prune", "prune_method", "prune_kept", "pep_init")
"""Config keys of a serving or pruning form, on top of the method's own config."""


def embedding_from_config(
    features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None = None
) -> FeatureEmbedding:
    """Rebuild a layer (untrained; load its state_dict next) from `FeatureEmbedding.config()`.

    A config with a `precision` or `prune` (a layer served in that form) rebuilds the layer, then
    gives it that form's shape; one with `pep_init` (a layer training PEP thresholds) adds them.
    """
    base = {k: v for k, v in config.items() if k not in SERVING_KEYS}
    method = get_method(str(config["method"]))
    check_sharing(method, features)
    layer = method.from_config(features, base, device)
    if "precision" in config:
        return quantize_embedding(layer, config["precision"])
    if "pep_init" in config:
        return LearnedPruningEmbedding(layer, float(config["pep_init"]))
    if "prune_kept" in config:  # PEP-pruned: each table's own count of kept entries
        setting = {k: config[k] for k in ("prune", "prune_method", "prune_kept")}
        return prune_tables(layer, [t.weight for t in layer.table_modules()], config["prune_kept"], setting)
    return prune_embedding(layer, float(config["prune"])) if "prune" in config else layer



__all__ = [
    "FP32_BYTES",
    "Budget",
    "BudgetTarget",
    "BudgetUnit",
    "CollisionlessEmbedding",
    "EmbeddingMethod",
    "EmbeddingSpec",
    "FeatureEmbedding",
    "FeatureVocabulary",
    "HashingEmbedding",
    "LearnedPruningEmbedding",
    "Precision",
    "PruneMethod",
    "ServedEmbedding",
    "TableEmbedding",
    "UnifiedEmbedding",
    "UnifiedEmbeddingConfig",
    "UnifiedOptions",
    "Vocabulary",
    "VocabularyStats",
    "budget_target",
    "build_embedding",
    "check_features",
    "check_sharing",
    "collisionless_parameters",
    "embedding_from_config",
    "get_method",
    "method_names",
    "prune_embedding",
    "quantize_embedding",
]
