"""OptEmbed: the supernet's row thresholds and width sampling, the budget cut, the evolutionary search,
the retrained layer's start, and the whole three-stage run (the registry contract is in test_methods)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import PLANTED_SCHEMA, planted_chunk

from featmux.data.cache import EncodedDataset
from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.optembed import (
    OptEmbedEmbedding,
    OptEmbedOptions,
    OptEmbedSupernet,
    evolutionary_search,
    fit_rows,
    shape_cost,
)
from featmux.embeddings.registry import BudgetTarget, BudgetUnit
from featmux.models import build_model
from featmux.training.config import TrainConfig
from featmux.training.optembed import (
    Supernet,
    final_layer,
    search_shape,
    shape_at,
    shape_score,
)
from featmux.training.trainer import Trainer

DIM = 8


def _supernet(features, vocabulary, penalty=1e-3):
    sizes = {f.name: vocabulary.cardinality(f.name) for f in features}
    net = OptEmbedSupernet(features, DIM, sizes, penalty)
    net.fill_vocabulary(vocabulary)
    return net


def test_supernet_prunes_rows_below_the_field_threshold_with_gradients_to_it(features, vocabulary, sparse):
    net = _supernet(features, vocabulary).eval()
    with torch.no_grad():
        net.table.weight.normal_()  # row norms around sqrt(8)
        # user: some rows go; device: all (thresholds are in units of the initial row norm)
        net.thresholds.copy_(torch.tensor([2.8, 0.0, 6.0, 0.0]) / net.threshold_unit)
    out = net(sparse)  # eval, no shape: all D columns
    rows = net.table.univalent_rows(sparse.ids)  # [B, 3]
    norms = net.table.weight[rows].norm(dim=-1)
    kept = norms > net.thresholds[:3] * net.threshold_unit
    torch.testing.assert_close(out[:, :3], net.table.weight[rows] * kept.unsqueeze(-1), rtol=0, atol=0)
    assert not kept[:, 2].any() and kept[:, 1].all()
    loss = (out * torch.randn_like(out)).sum() + net.auxiliary_loss()
    loss.backward()
    assert net.thresholds.grad[0] != 0  # rows near the threshold pass the straight-through gradient
    assert net.thresholds.grad[2].item() == pytest.approx(
        -1e-3 * np.exp(-net.thresholds[2].item())
    )  # only the penalty: rows far off
    assert net.auxiliary_loss().item() == pytest.approx(1e-3 * torch.exp(-net.thresholds).sum().item())


def test_supernet_samples_widths_in_training_and_reads_fixed_ones_in_a_shape(features, vocabulary, sparse):
    net = _supernet(features, vocabulary)
    with torch.no_grad():
        net.table.weight.normal_()
        net.thresholds.fill_(-1.0)  # keep every row
    net.train()
    out = net(sparse)  # [B, F, D]
    nonzero = out.abs() > 0
    widths = nonzero.sum(-1)
    # each (sample, field) reads a prefix of the columns: its first d in 1..D
    prefix = torch.arange(DIM) < widths.unsqueeze(-1)
    filled = widths > 0
    assert torch.equal(nonzero[filled], prefix[filled]) and len(set(widths[filled].tolist())) > 2
    net.use_shape([2, 5, 8, 1])
    out = net(sparse)
    for f, d in enumerate([2, 5, 8, 1]):
        assert (out[:, f, d:] == 0).all()
    assert out[:, 0, :2].abs().sum() > 0
    keep = torch.zeros(net.table.num_rows, dtype=torch.bool)
    net.use_shape([8, 8, 8, 8], keep)
    assert (net(sparse) == 0).all()  # no row kept: everything reads zero
    net.use_shape(None)


@pytest.mark.parametrize("unit", [BudgetUnit.BYTES, BudgetUnit.PARAMS])
def test_fit_rows_keeps_the_candidates_and_cuts_the_lowest_priority_to_the_budget(unit):
    rng = np.random.default_rng(0)
    margins = [rng.normal(size=n) for n in (40, 300, 7)]  # as priorities: the positive ones are candidates
    candidates = [m[m > 0] for m in margins]
    dims = (3, 6, 8)
    learned = np.array([int((m > 0).sum()) for m in margins])
    per_value, key = (4, 8) if unit is BudgetUnit.BYTES else (1, 0)
    roomy = BudgetTarget(10**6, unit)
    assert fit_rows(candidates, dims, roomy) == learned.tolist()
    full = shape_cost(learned, np.array(dims), roomy)
    for amount in (full - 1, full // 2, full // 5):
        target = BudgetTarget(amount, unit)
        counts = np.array(fit_rows(candidates, dims, target))
        assert shape_cost(counts, np.array(dims), target) <= amount
        assert (counts <= learned).all()
        # the cut is the fewest drops: putting back the last row dropped would not fit
        dropped = [np.sort(m[m > 0])[::-1][c:] for m, c in zip(margins, counts, strict=True)]
        field = max(range(3), key=lambda f: dropped[f][0] if dropped[f].size else -np.inf)
        assert shape_cost(counts, np.array(dims), target) + dims[field] * per_value + key > amount
        # and the dropped rows have smaller margins than every kept one
        kept_min = min(np.sort(m[m > 0])[::-1][c - 1] for m, c in zip(margins, counts, strict=True) if c)
        assert max(d[0] for d in dropped if d.size) <= kept_min
    assert fit_rows(candidates, dims, BudgetTarget(sum(dims) * per_value - 1, unit)) is None


def test_evolutionary_search_finds_a_better_shape_and_respects_feasibility():
    best = (2, 7, 4, 1, 5)

    def score(d):
        return -float(np.abs(np.array(d) - best).sum())

    def feasible(d):
        return sum(d) <= 30

    options = OptEmbedOptions(population=12, parents=4, generations=8, mutation=0.2)
    result = evolutionary_search(score, feasible, 5, 8, options, seed=0)
    assert feasible(result.dims) and list(result.history) == sorted(result.history)
    rng = np.random.default_rng(1)
    randoms = [score(tuple(rng.integers(1, 9, 5))) for _ in range(50)]
    assert result.score > max(randoms) and result.score >= -4
    assert result.evaluated <= 13 + 7 * 8


@pytest.fixture
def planted_splits(tmp_path):
    train = EncodedDataset.write(tmp_path / "train", PLANTED_SCHEMA, [planted_chunk(4000, 1)])
    valid = EncodedDataset.write(tmp_path / "valid", PLANTED_SCHEMA, [planted_chunk(2000, 3)])
    return train, valid


def test_search_beats_random_shapes_and_retraining_starts_from_the_initial_rows(planted_splits):
    train, valid = planted_splits
    vocabulary = train.fit_vocabulary()
    torch.manual_seed(0)
    layer = _supernet(PLANTED_SCHEMA.categorical, vocabulary, penalty=3e-4)
    model = build_model("deepfm", layer, 1, {"hidden": [16]})
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=4, batch_size=256, learning_rate=1e-2, progress=False, seed=0)
    fit = Trainer(model, config, PLANTED_SCHEMA).fit(train, valid)
    net = Supernet(
        model, layer, initial, fit, [vocabulary[f.name].counts for f in PLANTED_SCHEMA.categorical]
    )
    # a budget that fits every row at width 2 but about half of them at width 8
    target = BudgetTarget(3000, BudgetUnit.BYTES)
    options = OptEmbedOptions(population=8, parents=3, generations=3)
    result, shape = search_shape(net, valid, target, options, seed=0, batch_size=4096)
    rng = np.random.default_rng(7)
    shapes = [shape_at(net, tuple(int(v) for v in rng.integers(1, DIM + 1, 3)), target) for _ in range(6)]
    randoms = [shape_score(net, s, valid, 4096) for s in shapes]
    assert result.score > np.mean(randoms) + 0.005, (result, randoms)
    assert result.score == pytest.approx(shape_score(net, shape, valid, 4096))
    final = final_layer(net, shape)
    assert final.memory_bytes() <= target.amount and final.memory_bytes() == shape_cost(
        np.array(shape.rows), np.array(shape.dims), target
    )
    # the retrained layer starts from the supernet's initial rows (OOV first), its first d_f columns
    w0 = initial["embedding.table.weight"]
    start = int(layer.table.row_starts[0])
    expected = w0[np.concatenate([[start], start + 1 + shape.kept[0]]), : shape.dims[0]]
    torch.testing.assert_close(final.tables[0].detach(), expected, rtol=0, atol=0)
    kept_keys = layer.table.keys[: layer.table.vocab_sizes["a"]][torch.from_numpy(shape.kept[0])]
    assert torch.equal(final.keys[: shape.rows[0]], kept_keys)


def test_build_embedding_gives_the_prior_shape_within_budget(features, vocabulary):
    layer = build_embedding(features, EmbeddingSpec("optembed", DIM, Budget.parse("1/8")), vocabulary)
    assert isinstance(layer, OptEmbedEmbedding) and set(layer.dims.values()) == {DIM}
    assert layer.memory_bytes() <= round(42432 / 8)
    assert layer.memory_bytes() == sum((n + 1) * DIM * 4 + n * 8 for n in layer.rows.values())
    with pytest.raises(ValueError, match="too small"):
        build_embedding(features, EmbeddingSpec("optembed", DIM, Budget.parse("bytes:100")), vocabulary)


def test_run_experiment_runs_the_three_stages_within_budget(tmp_path):
    from featmux.training.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(
        dataset_options={"rows": 3000, "cardinalities": [10, 100, 1000]},
        model="dcnv2",
        model_options={"hidden": [16]},
        embedding="optembed",
        embedding_options={"population": 4, "parents": 2, "generations": 2},
        budget="1/8",
        embedding_dim=8,
        batch_size=256,
        epochs=1,
        threads=1,
        progress=False,
        cache_dir=tmp_path / "cache",
        checkpoint_dir=tmp_path / "run",
    )
    lines = []
    result = run_experiment(config, log=lines.append)
    stages = result["stages"]
    assert stages["search"]["evaluated"] >= 4 and stages["supernet"]["steps"] > 0
    assert result["embedding_bytes"] <= result["budget_target"]["amount"]
    assert result["embedding_config"]["dims"] == stages["search"]["dims"]
    assert result["embedding_config"]["rows"] == stages["rows"]
    assert (tmp_path / "run" / "supernet" / "last.pt").exists() and (tmp_path / "run" / "model.pt").exists()
    assert any("stage 3" in line for line in lines)


def test_the_trainer_adds_the_threshold_penalty_to_the_loss(planted_splits):
    train, _ = planted_splits
    torch.manual_seed(0)
    layer = _supernet(PLANTED_SCHEMA.categorical, train.fit_vocabulary(), penalty=1.0)
    model = build_model("deepfm", layer, 1, {"hidden": [16]})
    trainer = Trainer(model, TrainConfig(batch_size=256, progress=False), PLANTED_SCHEMA)
    before = layer.thresholds.detach().clone()
    loss = trainer.train_step(next(train.batches(256)), "test")
    assert loss > 3.0  # BCE (~0.69) + 1.0 * sum_f exp(-0) over the 3 fields
    assert (layer.thresholds.detach() > before).all()  # the penalty pushes every threshold up


def test_optembed_refuses_serving_forms_and_online_runs():
    from featmux.training.experiment import ExperimentConfig
    from featmux.training.online import OnlineConfig

    for form in ({"prune": 0.5}, {"precision": "int8"}):
        with pytest.raises(ValueError, match="searches its own table shape"):
            ExperimentConfig(embedding="optembed", budget="1/4", **form)
    with pytest.raises(ValueError, match="no online form"):
        OnlineConfig(embedding="optembed", budget="1/4", partition_rows=100, partitions=2)
