"""Training-step hooks (`on_train_step`): called by the batch and online trainers with global steps;
CCE re-clusters through them, and a resumed run re-clusters exactly as an uninterrupted one."""

from __future__ import annotations

import torch
from helpers import interrupted
from torch import nn

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
from featmux.embeddings.cce import ClusteredEmbedding
from featmux.hashing.mixer import feature_salt
from featmux.models import build_model
from featmux.training.config import TrainConfig
from featmux.training.online import OnlineConfig, run_online
from featmux.training.trainer import Trainer

CONFIG = TrainConfig(
    epochs=2, batch_size=256, learning_rate=3e-3, progress=False, seed=5, threads=1, checkpoint_every_steps=5
)
CCE = {"recluster_every": 5, "reclusters": 3}


class Recorder(nn.Module):
    """Records the steps it is called with (and whether autograd was on)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def on_train_step(self, step: int) -> None:
        self.calls.append((step, torch.is_grad_enabled()))


def _model(schema, train, method="hashing", options=None, seed=0):
    torch.manual_seed(seed)
    spec = EmbeddingSpec(method, 8, Budget.parse("1/2"), options=options or {})
    emb = build_embedding(schema.categorical, spec, train.fit_vocabulary())
    return build_model("dcnv2", emb, len(schema.numeric), {"hidden": [16]})


def test_the_batch_trainer_calls_hooks_with_global_steps_and_resumes_the_count(
    planted, tmp_path, monkeypatch
):
    schema, train, valid = planted
    model = _model(schema, train)
    model.recorder = Recorder()
    result = Trainer(model, CONFIG, schema).fit(train, valid)
    assert model.recorder.calls == [(s, False) for s in range(1, result.steps + 1)] and result.steps == 32
    stopped = _model(schema, train)
    stopped.recorder = Recorder()
    interrupted(lambda: Trainer(stopped, CONFIG, schema, tmp_path).fit(train, valid), 12, monkeypatch)
    resumed = _model(schema, train)
    resumed.recorder = Recorder()
    Trainer(resumed, CONFIG, schema, tmp_path).fit(train, valid)  # from the checkpoint at step 10
    assert [s for s, _ in resumed.recorder.calls] == list(range(11, 33))


def test_cce_reclusters_in_training_and_a_resumed_run_ends_identical(planted, tmp_path, monkeypatch):
    schema, train, valid = planted
    reference = _model(schema, train, "cce", CCE)
    Trainer(reference, CONFIG, schema).fit(train, valid)
    emb = reference.embedding
    assert isinstance(emb, ClusteredEmbedding)
    # rounds at steps 5, 10, 15: column 0 (column 1 re-hashed), 1 (0 re-hashed), 0 (1 re-hashed)
    for slot, f in enumerate((*emb.univalent, *emb.multivalent)):
        if emb.known[f.name]:
            assert emb.salts[slot].tolist() == [feature_salt(f.name, 4), feature_salt(f.name, 7)], f.name
    model = _model(schema, train, "cce", CCE)  # stopped at step 12: between the second and third round
    interrupted(lambda: Trainer(model, CONFIG, schema, tmp_path).fit(train, valid), 12, monkeypatch)
    resumed = _model(schema, train, "cce", CCE, seed=123)  # everything comes from the checkpoint
    Trainer(resumed, CONFIG, schema, tmp_path).fit(train, valid)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_online_trainer_calls_hooks_with_global_steps(monkeypatch):
    calls = []
    hook = ClusteredEmbedding.on_train_step

    def recording(self, step):
        calls.append(step)
        return hook(self, step)

    monkeypatch.setattr(ClusteredEmbedding, "on_train_step", recording)
    config = OnlineConfig(
        dataset="synthetic",
        dataset_options={"cardinalities": [5, 20, 100, 300], "seed": 3},
        partition_rows=2_000,
        partitions=3,
        model="dcnv2",
        model_options={"cross_layers": 1, "hidden": [16]},
        embedding="cce",
        embedding_options={"recluster_every": 4, "reclusters": 2},
        budget="1/2",
        embedding_dim=8,
        batch_size=500,
        threads=1,
    )
    result = run_online(config)
    assert calls == list(range(1, 13))  # 3 partitions of 4 batches
    emb = result.model.embedding
    assert isinstance(emb, ClusteredEmbedding)
    slot = len(emb.univalent) - 1
    name = emb.univalent[slot].name  # the largest feature: it has known values
    assert emb.known[name] > 0
    assert emb.salts[slot].tolist() == [feature_salt(name, 4), feature_salt(name, 3)]  # rounds 0 and 1


def test_a_recluster_drops_the_tables_optimizer_state_and_nothing_else(planted):
    """Adam's moments of the re-clustered table were fitted to the rows it replaced: they restart."""
    schema, train, valid = planted
    model = _model(schema, train, "cce", CCE)
    trainer = Trainer(model, CONFIG, schema)
    trainer.fit(train, valid)  # 32 steps; the last re-clustering ran after step 15
    (adam,) = trainer.optimizers
    table = model.embedding.weight
    others = [p for p in model.parameters() if p is not table]
    assert int(adam.state[table]["step"]) == 32 - 15
    assert {int(adam.state[p]["step"]) for p in others} == {32}
