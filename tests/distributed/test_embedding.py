"""TorchRecEmbedding: bit-identical lookups and gradients, weights both ways, meta tables."""

from __future__ import annotations

import inspect

import pytest
import torch

from featmux.distributed import TorchRecEmbedding, tables_on_meta
from featmux.embeddings import (
    Budget,
    CollisionlessEmbedding,
    EmbeddingSpec,
    HashingEmbedding,
    UnifiedEmbedding,
    UnifiedEmbeddingConfig,
    build_embedding,
    embedding_from_config,
)
from featmux.models import build_model


def _layers(features, vocabulary, dim: int = 8):
    torch.manual_seed(0)
    return {
        "unified_k3_t3": UnifiedEmbedding(
            features,
            UnifiedEmbeddingConfig(
                rows=5000, embedding_dim=dim, num_tables=3, chunks={"user": 3, "genres": 2}
            ),
        ),
        "unified_private": build_embedding(
            features,
            EmbeddingSpec(
                "unified",
                dim,
                Budget(rows=1200),
                options={"num_tables": 2, "chunks": {"user": 2}, "private_max_cardinality": 20},
            ),
            vocabulary,
        ),
        "hashing": build_embedding(features, EmbeddingSpec("hashing", dim, Budget(rows=900)), vocabulary),
        "collisionless": build_embedding(features, EmbeddingSpec("collisionless", dim), vocabulary),
    }


KINDS = ["unified_k3_t3", "unified_private", "hashing", "collisionless"]


@pytest.mark.parametrize("dim", [8, 10])  # 10: TorchRec tables padded to 12 columns (FBGEMM wants % 4)
@pytest.mark.parametrize("kind", KINDS)
def test_lookups_are_bit_identical(kind, dim, features, vocabulary, sparse):
    layer = _layers(features, vocabulary, dim)[kind]
    adapter = TorchRecEmbedding(layer)
    assert adapter.slot_names == layer.slot_names
    assert adapter.table_dim == (8 if dim == 8 else 12)
    assert adapter.num_parameters() == layer.num_parameters()
    out = adapter(sparse)
    assert out.shape == (sparse.batch_size, layer.num_slots, dim)
    assert torch.equal(out, layer(sparse))  # univalent, MEAN and SUM bags, K_f chunks, OOV, empty bags


@pytest.mark.parametrize("dim", [8, 10])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_featmux(kind, dim, features, vocabulary, sparse):
    layer = _layers(features, vocabulary, dim)[kind]
    adapter = TorchRecEmbedding(layer)
    probe = torch.randn(sparse.batch_size, layer.num_slots, dim)
    (layer(sparse) * probe).sum().backward()
    (adapter(sparse) * probe).sum().backward()
    ours = {t.name: w.grad for t, w in zip(adapter.tables, adapter.table_parameters(), strict=True)}
    for t in adapter.tables:
        part = layer if not t.part else getattr(layer, t.part)
        expected = part.weight.grad[t.start : t.start + t.rows]
        torch.testing.assert_close(ours[t.name][:, :dim], expected, rtol=1e-5, atol=1e-6)  # summation order
        assert not ours[t.name][:, dim:].any()  # padding columns get no gradient


def test_unified_tables_follow_the_placement(features):
    layer = UnifiedEmbedding(
        features, UnifiedEmbeddingConfig(rows=1001, embedding_dim=4, num_tables=3, chunks={"user": 2})
    )
    adapter = TorchRecEmbedding(layer)
    assert [t.name for t in adapter.tables] == ["unified_t0", "unified_t1", "unified_t2"]
    assert [t.rows for t in adapter.tables] == [334, 334, 333]
    assert sorted(s for t in adapter.tables for s in t.slots) == sorted(layer.slot_names)
    # placement comes from names: listing the features in another order changes no table's slots
    again = TorchRecEmbedding(
        UnifiedEmbedding(tuple(reversed(features)), layer.unified_config), device=torch.device("meta")
    )
    assert {t.name: set(t.slots) for t in again.tables} == {t.name: set(t.slots) for t in adapter.tables}


def test_hashing_tables_per_feature_with_safe_names(features, vocabulary):
    adapter = TorchRecEmbedding(_layers(features, vocabulary)["hashing"])
    names = [t.name for t in adapter.tables]
    assert names == [
        "hashing__user",
        "hashing__item_id",
        "hashing__device",
        "hashing__genres",
        "hashing__tags",
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_weights_both_ways(kind, features, vocabulary, sparse):
    layer = _layers(features, vocabulary, 10)[kind]
    adapter = TorchRecEmbedding(layer)
    with torch.no_grad():
        for w in adapter.table_parameters():
            w.add_(torch.randn_like(w))  # train the adapter a little
    back = adapter.to_featmux()
    assert type(back) is type(layer)
    assert torch.equal(back(sparse), adapter(sparse))
    assert set(back.state_dict()) == set(layer.state_dict())
    # and into a fresh adapter built from the config alone (no weights, no vocabulary yet)
    with tables_on_meta():
        skeleton = embedding_from_config(features, layer.config())
    fresh = TorchRecEmbedding(skeleton)
    fresh.load_featmux_state_dict(back.state_dict())
    assert torch.equal(fresh(sparse), adapter(sparse))


def test_tables_on_meta_allocates_no_table(features):
    with tables_on_meta():
        # K = T = 4: every feature's chunks reach every sub-table (placement is by name, see unified.py)
        config = UnifiedEmbeddingConfig(rows=10**9, embedding_dim=64, num_tables=4, default_chunks=4)
        layer = UnifiedEmbedding(features, config)
    assert layer.shared.weight.is_meta
    assert not layer.shared.slot_salts.is_meta
    adapter = TorchRecEmbedding(layer, device=torch.device("meta"))
    assert adapter.num_parameters() == 64 * 10**9
    assert [t.rows for t in adapter.tables] == [250_000_000] * 4
    # a model around it is cheap to build, as the planner wants
    with torch.device("meta"):
        model = build_model("dcnv2", adapter, 0, {"cross_layers": 1, "hidden": [16]})
    assert model.embedding is adapter


SPECS = {
    "unified_private_dim10": EmbeddingSpec(
        "unified",
        10,
        Budget(rows=1203),
        options={"num_tables": 2, "chunks": {"user": 2}, "private_max_cardinality": 20},
    ),
    "hashing": EmbeddingSpec("hashing", 8, Budget(rows=905)),
    "collisionless_dim3": EmbeddingSpec("collisionless", 3),
}


@pytest.mark.parametrize("kind", list(SPECS))
@pytest.mark.parametrize("chunk", [16, 1 << 22])  # chunk boundaries inside tables, and whole tables
def test_replayed_draws_give_the_one_process_model(kind, chunk, features, vocabulary, monkeypatch):
    """Meta construction + fill_from_draws starts exactly where building the model normally does: the
    tables (replayed chunk by chunk) and the dense layers (the RNG advanced past the tables)."""
    from featmux.distributed import embedding as module

    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", chunk)
    spec = SPECS[kind]
    torch.manual_seed(5)
    layer = build_embedding(features, spec, vocabulary)
    model = build_model("dcnv2", layer, 0, {"cross_layers": 1, "hidden": [16], "dropout": 0.1})
    torch.manual_seed(5)
    draws: list = []
    with tables_on_meta(draws):
        meta_layer = build_embedding(features, spec, vocabulary)
    adapter = TorchRecEmbedding(meta_layer)  # EBC on cpu, initialized by TorchRec's init_fn
    replayed = build_model("dcnv2", adapter, 0, {"cross_layers": 1, "hidden": [16], "dropout": 0.1})
    adapter.fill_from_draws(draws)
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in adapter.featmux_state_dict().items())
    dense = {k: v for k, v in model.state_dict().items() if not k.startswith("embedding.")}
    assert all(torch.equal(v, replayed.state_dict()[k]) for k, v in dense.items())
    if adapter.table_dim > adapter.embedding_dim:  # padding columns are zero
        weights = adapter.ebc.state_dict()
        assert all(not w[:, adapter.embedding_dim :].any() for w in weights.values())


def test_rejects_meta_buffers_and_unknown_layers(features, vocabulary):
    layer = CollisionlessEmbedding.from_vocabulary(features, vocabulary, 4, device=torch.device("meta"))
    with pytest.raises(ValueError, match="tables_on_meta"):
        TorchRecEmbedding(layer)

    class Other(HashingEmbedding):
        pass

    with pytest.raises(TypeError, match="UnifiedEmbedding"):
        TorchRecEmbedding(torch.nn.Identity())  # type: ignore[arg-type]
    assert isinstance(
        TorchRecEmbedding(Other(features, 4, dict.fromkeys(vocabulary.feature_names, 10))), TorchRecEmbedding
    )


def test_adapter_leaves_the_global_rng_alone(features):
    layer = UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=100, embedding_dim=4))
    torch.manual_seed(3)
    TorchRecEmbedding(layer)
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3), after)


def test_adapter_in_a_model_trains_single_process(features, vocabulary, sparse):
    layer = _layers(features, vocabulary)["unified_private"]
    adapter = TorchRecEmbedding(layer)
    adapter.set_sparse_gradients(True)
    model = build_model("dcnv2", adapter, 0, {"cross_layers": 1, "hidden": [16]})
    loss = model(sparse, torch.zeros(sparse.batch_size, 0)).sigmoid().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.is_sparse for p in adapter.table_parameters())
    assert {id(p) for p in model.dense_parameters()}.isdisjoint({id(p) for p in adapter.table_parameters()})
    assert adapter.config() == layer.config()


def test_public_constructors_are_documented():
    from featmux import distributed

    for cls in (
        distributed.TorchRecEmbedding,
        distributed.DistributedTrainer,
        distributed.ShardingConfig,
        distributed.DistributedOptions,
        distributed.TableSlice,
        distributed.PlanReport,
    ):
        doc = inspect.getdoc(cls) or ""
        assert "Args:" in doc, cls.__name__
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        missing = [p for p in params if f"{p}:" not in doc]
        assert not missing, f"{cls.__name__} does not document {missing}"
        assert len(params) <= 6
    for cls in (
        distributed.TorchRecEmbedding,
        distributed.DistributedTrainer,
        distributed.ShardingConfig,
        distributed.DistributedOptions,
    ):
        assert "Example:" in (inspect.getdoc(cls) or ""), cls.__name__
