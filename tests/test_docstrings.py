"""Public classes document their constructor: an Args section naming every argument, and an Example."""

from __future__ import annotations

import inspect

import pytest

import featmux
from featmux import models, serving
from featmux.benchmarks import verdicts
from featmux.embeddings import (
    adaptive,
    cce,
    dhe,
    hash_embedding,
    mde,
    optembed,
    pep,
    precision,
    pruning,
    qr,
    registry,
    robe,
    served,
    split,
    tt,
    unified,
    zch,
)
from featmux.training.inference_time import InferenceTiming

PUBLIC = [
    featmux.CollisionlessEmbedding,
    featmux.HashingEmbedding,
    featmux.UnifiedEmbedding,
    featmux.UnifiedEmbeddingConfig,
    featmux.Budget,
    registry.BudgetTarget,
    registry.VocabularyStats,
    unified.UnifiedOptions,
    split.FullTableSplit,
    qr.QREmbedding,
    qr.QROptions,
    hash_embedding.HashEmbedding,
    hash_embedding.HashEmbeddingOptions,
    robe.RobeEmbedding,
    robe.RobeOptions,
    mde.MixedDimEmbedding,
    mde.MixedDimOptions,
    dhe.DeepHashEmbedding,
    dhe.DeepHashOptions,
    tt.TTEmbedding,
    tt.TTOptions,
    adaptive.AdaptiveEmbedding,
    adaptive.AdaptiveOptions,
    zch.ZchEmbedding,
    zch.ZchOptions,
    cce.ClusteredEmbedding,
    cce.CCEOptions,
    precision.QuantizedTable,
    served.ServedEmbedding,
    pruning.PrunedTable,
    pep.SoftThreshold,
    pep.LearnedPruningEmbedding,
    optembed.OptEmbedSupernet,
    optembed.OptEmbedEmbedding,
    optembed.OptEmbedOptions,
    optembed.SearchResult,
    featmux.Vocabulary,
    featmux.Trainer,
    featmux.CategoricalFeature,
    featmux.Schema,
    models.LR,
    models.FM,
    models.DeepFM,
    models.DCNv2,
    models.DLRM,
    featmux.Predictor,
    serving.ScoringGraph,
    serving.Artefact,
    models.WDL,
    models.DCN,
    models.XDeepFM,
    models.AutoInt,
    models.FinalMLP,
    models.FinalNet,
    models.DIN,
    InferenceTiming,
    verdicts.Margin,
    verdicts.BudgetVerdict,
    verdicts.FrontierCheck,
]


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_constructor_documented(cls):
    doc = inspect.getdoc(cls) or ""
    assert "Args:" in doc and "Example:" in doc, f"{cls.__name__} needs Args: and Example: sections"
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    missing = [p for p in params if f"{p}:" not in doc]
    assert not missing, f"{cls.__name__} docstring does not describe {missing}"
    assert len(params) <= 6, f"{cls.__name__} takes {len(params)} constructor arguments; keep it to 6"
