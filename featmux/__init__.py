"""featmux: memory-efficient categorical feature embeddings for CTR and recommendation models.

The public API in a few names:

    >>> import featmux as fm
    >>> features = [fm.CategoricalFeature(name, fm.ValueEncoding.INT) for name in ("user", "ad")]
    >>> emb = fm.UnifiedEmbedding(features, fm.UnifiedEmbeddingConfig(rows=100_000, embedding_dim=16))
    >>> vectors = emb(fm.SparseFeatures(ids))          # ids: int64 [B, 2] -> [B, 2, 16]

    >>> model = fm.load("runs/frappe")              # a --checkpoint-dir of `featmux train`, or an export
    >>> model.predict(frame)                           # click probabilities of raw feature values

    >>> result = fm.run_experiment(fm.ExperimentConfig(dataset="frappe", data="data/frappe", budget="1/16"))
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): `import featmux` (and every `featmux` command, `--help`
# included) stays fast, without loading torch until something needs it.
_EXPORTS = {
    "featmux.embeddings": (
        "Budget",
        "CollisionlessEmbedding",
        "EmbeddingMethod",
        "EmbeddingSpec",
        "FeatureEmbedding",
        "HashingEmbedding",
        "UnifiedEmbedding",
        "UnifiedEmbeddingConfig",
        "Vocabulary",
        "build_embedding",
        "embedding_from_config",
        "method_names",
    ),
    "featmux.features": (
        "CategoricalFeature",
        "NumericFeature",
        "NumericTransform",
        "Pooling",
        "Schema",
        "ValueEncoding",
    ),
    "featmux.models": ("CTRModel", "build_model"),
    "featmux.serving.predictor": ("Predictor", "load"),
    "featmux.sparse": ("Bag", "SparseFeatures"),
    "featmux.training.checkpoint": ("load_model", "save_model"),
    "featmux.training.config": ("OptimizerKind", "TrainConfig"),
    "featmux.training.experiment": ("ExperimentConfig", "run_experiment"),
    "featmux.training.online": ("OnlineConfig", "run_online"),
    "featmux.training.trainer": ("Trainer", "evaluate"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'featmux' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__version__ = "0.1.0"

__all__ = [
    "Bag",
    "Budget",
    "CTRModel",
    "CategoricalFeature",
    "CollisionlessEmbedding",
    "EmbeddingMethod",
    "EmbeddingSpec",
    "ExperimentConfig",
    "FeatureEmbedding",
    "HashingEmbedding",
    "NumericFeature",
    "NumericTransform",
    "OnlineConfig",
    "OptimizerKind",
    "Pooling",
    "Predictor",
    "Schema",
    "SparseFeatures",
    "TrainConfig",
    "Trainer",
    "UnifiedEmbedding",
    "UnifiedEmbeddingConfig",
    "ValueEncoding",
    "Vocabulary",
    "build_embedding",
    "build_model",
    "embedding_from_config",
    "evaluate",
    "load",
    "load_model",
    "method_names",
    "run_experiment",
    "run_online",
    "save_model",
]
