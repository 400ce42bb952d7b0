"""zch: TorchRec's managed-collision map behind the embedding interface (the contract is in test_methods)."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding, embedding_from_config, get_method
from featmux.embeddings.zch import INSTALL_HINT, TorchRecMissingError, ZchEmbedding, ZchOptions
from featmux.features import CategoricalFeature, ValueEncoding
from featmux.sparse import Bag, SparseFeatures

pytest.importorskip("torchrec")

ONE = (CategoricalFeature("user", ValueEncoding.INT),)
DIM = 4


def _batch(*values: int) -> SparseFeatures:
    return SparseFeatures(torch.tensor(values, dtype=torch.int64).view(-1, 1), ())


def _held(layer: ZchEmbedding) -> set[int]:
    ids = layer.slot_ids()
    return set(ids[ids != torch.iinfo(torch.int64).max].tolist())


def _stream(eviction: str) -> ZchEmbedding:
    """3 value rows; c seen most but longest ago, then a and b, then d (3 times) needs a row."""
    layer = ZchEmbedding(ONE, DIM, slots=4, options=ZchOptions(eviction=eviction))
    for batch in (_batch(3, 3, 3, 3, 1, 2), _batch(1, 2), _batch(4, 4, 4)):
        layer(batch)
    return layer


def test_lfu_evicts_the_least_frequent_and_lru_the_least_recent():
    lfu = _stream("lfu")
    assert 3 in _held(lfu) and 4 in _held(lfu) and len(_held(lfu) & {1, 2}) == 1  # a or b (2 sightings) went
    lru = _stream("lru")
    assert _held(lru) == {1, 2, 4}  # c (seen 4 times, but only in the first batch) went


def test_values_without_a_slot_read_their_features_fallback_row_and_new_slots_start_from_it():
    features = (*ONE, CategoricalFeature("item", ValueEncoding.INT))
    layer = ZchEmbedding(features, DIM, slots=3, options=ZchOptions())
    fallback = {"user": layer.slots - 1, "item": layer.slots}
    with torch.no_grad():
        layer.weight[: layer.slots - 1] = 5.0  # the managed rows' random start is overwritten on admission
    layer.eval()
    rows = layer.univalent_rows(torch.tensor([[7, 7]]))  # nothing admitted in evaluation mode
    assert rows.tolist() == [[fallback["user"], fallback["item"]]]
    layer.train()
    layer(SparseFeatures(torch.tensor([[7, 7]]), ()))  # the same fingerprint in two features: two slots
    rows = layer.univalent_rows(torch.tensor([[7, 7], [8, 8]]))
    assert rows[0, 0] != rows[0, 1] and set(rows[0].tolist()) == {0, 1}
    assert rows[1].tolist() == [fallback["user"], fallback["item"]]  # no slot left for 8
    for j, name in enumerate(("user", "item")):
        torch.testing.assert_close(layer.weight[rows[0, j]], layer.weight[fallback[name]])
    assert layer.slots_by_feature() == {"user": 1, "item": 1}


def test_frequency_filter_gives_a_row_from_the_nth_sighting_on():
    layer = ZchEmbedding(ONE, DIM, slots=8, options=ZchOptions(min_sightings=3), sketch_width=4096)
    fallback = layer.slots - 1

    def row(value: int) -> int:
        return int(layer.univalent_rows(torch.tensor([[value]]))[0, 0])

    for sightings in (1, 2, 3):
        layer(_batch(10, 11, 11, 11) if sightings == 1 else _batch(10))
        assert (row(10) == fallback) == (sightings < 3), sightings
    assert row(11) != fallback  # three sightings in one batch are three sightings
    assert row(12) == fallback


def test_frequency_filter_with_an_empty_first_offer_still_profiles_full_batches():
    layer = ZchEmbedding(ONE, DIM, slots=64, options=ZchOptions(min_sightings=2), sketch_width=4096)
    layer(_batch(*range(40)))  # nothing offered: every value seen once
    layer(_batch(*range(40)))  # all 40 offered at once: the history was sized for the whole batch
    assert _held(layer) == set(range(40))


def test_remap_is_torchrecs():
    from torchrec.sparse.jagged_tensor import JaggedTensor

    layer = ZchEmbedding(ONE, DIM, slots=6, options=ZchOptions())
    layer(_batch(5, 6, 7, 8, 9, 10, 11))  # more values than the 5 value rows
    ids = torch.arange(0, 20)
    theirs = layer.mch.remap({"x": JaggedTensor(values=ids, lengths=torch.tensor([20]))})["x"].values()
    ours = layer.univalent_rows(ids.view(-1, 1)).view(-1)
    assert torch.equal(ours, theirs)  # one feature: its fallback row is MCH's miss slot
    assert int((theirs != layer.slots - 1).sum()) == layer.slots - 1  # every value row is in use


@pytest.mark.parametrize("options", [{}, {"eviction": "lru"}, {"min_sightings": 2}])
@pytest.mark.parametrize("budget", ["bytes:3000", "bytes:12345", "params:800", "1/4"])
def test_solve_spends_the_budget_to_one_slot(options, budget, features, vocabulary):
    spec = EmbeddingSpec("zch", DIM, Budget.parse(budget), options=options)
    layer = build_embedding(features, spec, vocabulary)
    assert isinstance(layer, ZchEmbedding)
    full = sum(n + 1 for n in (1000, 300, 4, 18)) * DIM
    target = Budget.parse(budget).target(full, DIM)
    if target.unit.value == "bytes":
        # rows, 3 int64 per slot, the iteration counter and the sketch: exactly what is stored
        stored = (layer.slots - 1 + len(features)) * DIM * 4 + 24 * layer.slots + 8 + 2 * layer.sketch_width
        assert layer.memory_bytes() == stored <= target.amount < stored + DIM * 4 + 24
    else:
        assert layer.num_parameters() <= target.amount < layer.num_parameters() + DIM
    assert "_output_segments_tensor" not in " ".join(layer.state_dict())
    assert (layer.sketch_width > 0) == ("min_sightings" in options)


def test_checkpoint_round_trip_keeps_the_map_and_its_future(features, vocabulary, sparse):
    spec = EmbeddingSpec("zch", DIM, Budget.parse("bytes:1500"), options={"eviction": "lru"})
    layer = build_embedding(features, spec, vocabulary)
    for shift in (0, 100, 200):
        layer(SparseFeatures(sparse.ids + shift, sparse.bags))
    buffer = io.BytesIO()
    torch.save({"config": layer.config(), "state": layer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])  # strict: the left-out segments buffer is restored
    assert torch.equal(rebuilt.slot_ids(), layer.slot_ids())
    for module in (layer, rebuilt):
        module.eval()
    torch.testing.assert_close(rebuilt(sparse), layer(sparse), rtol=0, atol=0)
    for module in (layer, rebuilt):  # training goes on identically (the iteration counter included)
        module.train()
        module(SparseFeatures(sparse.ids + 300, sparse.bags))
    assert torch.equal(rebuilt.slot_ids(), layer.slot_ids())
    torch.testing.assert_close(rebuilt.weight, layer.weight, rtol=0, atol=0)


def test_options_are_validated():
    with pytest.raises(ValueError, match="eviction must be one of"):
        ZchOptions(eviction="fifo")
    with pytest.raises(ValueError, match="min_sightings"):
        ZchOptions(min_sightings=0)
    with pytest.raises(ValueError, match="unknown zch option"):
        get_method("zch").parse_options({"policy": "lfu"})
    with pytest.raises(ValueError, match="too small"):
        build_embedding(ONE, EmbeddingSpec("zch", DIM, Budget.parse("bytes:60")), None)


_TORCHREC = ("torchrec", "torchrec.modules", "torchrec.modules.mc_modules", "torchrec.sparse",
             "torchrec.sparse.jagged_tensor")  # fmt: skip


def test_without_torchrec_the_error_names_the_install_command(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from featmux.cli.main import app

    for name in _TORCHREC:
        monkeypatch.setitem(sys.modules, name, None)  # `import torchrec...` now fails
    with pytest.raises(ImportError, match=r"install\.sh --torchrec"):
        EmbeddingSpec("zch", DIM, Budget.parse("1/4"))
    assert issubclass(TorchRecMissingError, ValueError) and "install.sh --torchrec" in INSTALL_HINT
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    args = ["train", "--dataset-option", "rows=500", "--embedding", "zch", "--budget", "1/4", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error:" in result.output and "scripts/install.sh --torchrec" in result.output


def test_bags_read_their_own_slots(features, vocabulary):
    layer = build_embedding(features, EmbeddingSpec("zch", DIM, Budget.parse("1")), vocabulary)
    bag = Bag(torch.tensor([3, 3, 4]), torch.tensor([0, 2, 3]))
    layer(SparseFeatures(torch.zeros(2, 3, dtype=torch.int64), (bag,)))
    rows = layer.bag_rows(0, torch.tensor([3, 4, 5]))
    assert rows.shape == (3, 1) and rows[0, 0] != rows[1, 0]
    assert int(rows[2, 0]) == layer.slots - 1 + 3  # genres' fallback row: 5 was never seen
    assert layer.slots_by_feature()["genres"] == 2
