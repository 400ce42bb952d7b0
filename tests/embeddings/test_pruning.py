"""Magnitude pruning stored as CSR: exact bytes, kept entries exact, round trip, and the CLI option."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding, embedding_from_config, prune_embedding
from featmux.training.experiment import ExperimentConfig

DIM = 8


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
@pytest.mark.parametrize(
    "spec",
    [
        EmbeddingSpec("hashing", DIM, Budget.parse("1/4")),
        EmbeddingSpec(
            "unified",
            DIM,
            Budget.parse("1/4"),
            options={"chunks": {"genres": 2}, "private_max_cardinality": 5},
        ),
    ],
    ids=lambda s: s.method,
)
def test_pruned_tables_keep_the_largest_entries_and_count_csr_bytes(
    features, vocabulary, sparse, spec, sparsity, tmp_path
):
    layer = build_embedding(features, spec, vocabulary)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    weights = [t.weight.detach().clone() for t in layer.table_modules()]
    before_rows = sum(w.shape[0] for w in weights)
    keys = layer.memory_bytes() - sum(w.numel() for w in weights) * 4
    expected = []  # each table with its smallest-magnitude entries zeroed
    for w in weights:
        keep = w.numel() - round(sparsity * w.numel())
        threshold = w.abs().flatten().topk(keep).values.min()
        expected.append(torch.where(w.abs() >= threshold, w, torch.zeros_like(w)))
    served = prune_embedding(layer, sparsity)
    nnz = sum(w.numel() - round(sparsity * w.numel()) for w in weights)
    assert served.memory_bytes() == nnz * (4 + 1) + (before_rows + len(weights)) * 4 + keys
    for table, dense in zip(served.inner.table_modules(), expected, strict=True):
        torch.testing.assert_close(table.served.read(torch.arange(dense.shape[0])), dense, rtol=0, atol=0)
    out = served(sparse)
    torch.save({"config": served.config(), "state": served.state_dict()}, tmp_path / "p.pt")
    saved = torch.load(tmp_path / "p.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), out, rtol=0, atol=0)


def test_prune_and_precision_are_exclusive_and_bounded():
    with pytest.raises(ValueError, match="not both"):
        ExperimentConfig(prune=0.5, precision="int8")
    with pytest.raises(ValueError, match="prune"):
        ExperimentConfig(prune=1.0)
