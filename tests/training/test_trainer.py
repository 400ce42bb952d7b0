from __future__ import annotations

import pytest
import torch
from helpers import Interrupt

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.models import build_model
from featmux.training.checkpoint import CheckpointError, load_model, safe_load
from featmux.training.config import OptimizerKind, TrainConfig
from featmux.training.trainer import Trainer, evaluate, predict


def make_model(schema, train, method="unified", seed=0, model="deepfm"):
    torch.manual_seed(seed)
    budget = None if method == "collisionless" else Budget(fraction=1.0)
    emb = build_embedding(schema.categorical, EmbeddingSpec(method, 8, budget), train.fit_vocabulary())
    return build_model(model, emb, len(schema.numeric), {"hidden": [32, 16]} if model != "fm" else None)


CONFIG = TrainConfig(epochs=3, batch_size=256, learning_rate=3e-3, progress=False, seed=5, threads=1)


@pytest.mark.parametrize("method", ["collisionless", "hashing", "unified"])
def test_learns_the_planted_signal(planted, method):
    schema, train, valid = planted
    model = make_model(schema, train, method)
    before = evaluate(model, valid).auc
    result = Trainer(model, CONFIG, schema).fit(train, valid)
    assert result.best_valid.auc > max(0.75, before + 0.05)
    assert result.steps == 3 * 16 and result.samples_per_second > 0
    assert evaluate(model, valid).auc == pytest.approx(result.best_valid.auc)


def test_sparse_adam_with_lazy_l2(planted):
    schema, train, valid = planted
    model = make_model(schema, train)
    cfg = TrainConfig(**{**CONFIG.__dict__, "optimizer": OptimizerKind.SPARSE_ADAM, "embedding_l2": 1e-4})
    result = Trainer(model, cfg, schema).fit(train, valid)
    assert result.best_valid.auc > 0.75


def test_early_stopping_restores_best_weights(planted):
    schema, train, valid = planted
    model = make_model(schema, train)
    cfg = TrainConfig(epochs=40, batch_size=256, learning_rate=3e-2, patience=1, lr_decay=1.0, progress=False)
    result = Trainer(model, cfg, schema).fit(train, valid)
    assert result.epochs < 40
    assert evaluate(model, valid).auc == pytest.approx(result.best_valid.auc)
    assert result.best_valid.auc == max(h["valid_auc"] for h in result.history)


def _interrupting(trainer: Trainer, after: int) -> Trainer:
    step = trainer._step

    def wrapped(batch):
        if trainer.state.step >= after:
            raise Interrupt
        return step(batch)

    trainer._step = wrapped
    return trainer


def test_resume_after_interruption_gives_identical_weights(planted, tmp_path):
    schema, train, valid = planted
    cfg = TrainConfig(
        epochs=3,
        batch_size=256,
        learning_rate=3e-3,
        progress=False,
        seed=5,
        threads=1,
        checkpoint_every_steps=5,
    )
    reference = make_model(schema, train, model="dcnv2")
    Trainer(reference, cfg, schema, tmp_path / "a").fit(train, valid)

    model = make_model(schema, train, model="dcnv2")
    with pytest.raises(Interrupt):
        _interrupting(Trainer(model, cfg, schema, tmp_path / "b"), after=23).fit(train, valid)
    resumed = make_model(schema, train, seed=123, model="dcnv2")  # different init: everything comes from disk
    result = Trainer(resumed, cfg, schema, tmp_path / "b").fit(train, valid)
    assert result.steps == 48
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_truncated_checkpoint_falls_back_to_previous(planted, tmp_path):
    schema, train, valid = planted
    cfg = TrainConfig(epochs=2, batch_size=256, progress=False, checkpoint_every_steps=4, threads=1)
    model = make_model(schema, train)
    with pytest.raises(Interrupt):
        _interrupting(Trainer(model, cfg, schema, tmp_path), after=10).fit(train, valid)
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt"):
        safe_load(last)
    events = []
    trainer = Trainer(make_model(schema, train), cfg, schema, tmp_path, on_event=events.append)
    trainer.fit(train, valid)
    resumed = next(e for e in events if e["event"] == "resumed")
    assert resumed["from"].endswith("last.prev.pt") and resumed["step"] == 4
    assert "unreadable checkpoint" in resumed["skipped_damaged"][0]


def test_best_model_file_rebuilds_without_training_code(planted, tmp_path):
    schema, train, valid = planted
    model = make_model(schema, train, "hashing")
    Trainer(model, CONFIG, schema, tmp_path).fit(train, valid)
    loaded, loaded_schema = load_model(tmp_path / "best.pt")
    assert loaded_schema == schema
    _labels, a = predict(model, valid)
    _, b = predict(loaded, valid)
    assert torch.equal(torch.from_numpy(a), torch.from_numpy(b))


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="not a torch device"):
        TrainConfig(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            TrainConfig(device="cuda")
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize("optimizer", [OptimizerKind.ADAM, OptimizerKind.ROW_ADAM])
def test_cuda_training_matches_cpu(planted, optimizer, tmp_path):
    schema, train, valid = planted
    results = {}
    for device in ("cpu", "cuda"):
        model = make_model(schema, train)
        cfg = TrainConfig(**{**CONFIG.__dict__, "optimizer": optimizer, "device": device})
        trainer = Trainer(model, cfg, schema, checkpoint_dir=tmp_path / device)
        results[device] = trainer.fit(train, valid).best_valid.auc
        assert next(model.parameters()).device.type == device
        resumed = Trainer(make_model(schema, train), cfg, schema, checkpoint_dir=tmp_path / device)
        resumed.fit(train, valid)  # picks up the finished run's checkpoint: nothing left to train
        assert resumed.state.step == trainer.state.step
    assert results["cuda"] > 0.75
    assert results["cuda"] == pytest.approx(results["cpu"], abs=0.01)


def test_final_batch_of_one_row_is_dropped_for_batchnorm(planted, tmp_path):
    from helpers import planted_chunk

    from featmux.data.cache import EncodedDataset
    from featmux.training.trainer import epoch_batches

    schema, _, valid = planted
    train = EncodedDataset.write(tmp_path / "odd", schema, [planted_chunk(257, 7)])  # 2 x 128 + 1 rows
    spec = EmbeddingSpec("unified", 8, Budget(fraction=1.0))
    emb = build_embedding(schema.categorical, spec, train.fit_vocabulary())
    options = {"hidden": [16], "batch_norm": True, "cross_layers": 1}
    model = build_model("dcnv2", emb, len(schema.numeric), options)
    cfg = TrainConfig(epochs=2, batch_size=128, progress=False, seed=1, threads=1)
    result = Trainer(model, cfg, schema).fit(train, valid)  # BatchNorm raised on the 1-row batch
    assert result.steps == 2 * 2 and result.epochs == 2.0
    assert (epoch_batches(257, 128), epoch_batches(258, 128), epoch_batches(3, 1)) == (2, 3, 3)
