"""Fault tolerance: SIGKILL at a random step, damaged checkpoints, NaN/Inf losses.

The SIGKILL test runs training in a real subprocess and kills it with SIGKILL when it reports a randomly
drawn step (it may be in the middle of a checkpoint write); on the online stream it kills the resumed run
again; the last resume must end with weights and results bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import interrupted

from featmux.data.cache import EncodedDataset
from featmux.training.checkpoint import CheckpointError, load_model, safe_load
from featmux.training.config import NonFinitePolicy, TrainConfig
from featmux.training.experiment import ExperimentConfig, run_experiment
from featmux.training.online import OnlineConfig, run_online
from featmux.training.trainer import NonFiniteLossError, Trainer

REPO = Path(__file__).resolve().parents[2]

# the child: print every step it has taken, then train (online stream or run_experiment) from a JSON config
CHILD = """
import sys
from featmux.training.trainer import Trainer

step = Trainer.train_step

def traced(self, *args, **kwargs):
    loss = step(self, *args, **kwargs)
    print("step", self.state.step + 1, flush=True)
    return loss

Trainer.train_step = traced
kind, config = sys.argv[1], sys.argv[2]
if kind == "online":
    from featmux.training.online import OnlineConfig, run_online
    run_online(OnlineConfig.model_validate_json(config))
else:
    from featmux.training.experiment import ExperimentConfig, run_experiment
    run_experiment(ExperimentConfig.model_validate_json(config))
print("done", flush=True)
"""

ONLINE = {
    "dataset": "synthetic",
    "dataset_options": {"cardinalities": [5, 20, 100, 300], "churn_rows": 3_000, "seed": 1},
    "partition_rows": 3_000,
    "partitions": 4,
    "model": "dcnv2",
    "model_options": {"cross_layers": 1, "hidden": [16], "dropout": 0.2},  # dropout: the RNG matters
    "embedding_dim": 8,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "threads": 1,
    "checkpoint_every_steps": 7,
}  # 4 x 47 = 188 steps
EXPERIMENT = {
    "dataset": "synthetic",
    "dataset_options": {"rows": 6_000, "cardinalities": [5, 20, 100, 300], "seed": 2},
    "model": "dcnv2",
    "model_options": {"cross_layers": 1, "hidden": [16], "dropout": 0.2},
    "embedding": "hashing",
    "budget": "1/2",
    "embedding_dim": 8,
    "epochs": 3,
    "batch_size": 128,
    "eval_every_steps": 20,
    "checkpoint_every_steps": 6,
    "threads": 1,
    "progress": False,
}  # 3 x 47 = 141 steps


def run_and_kill(kind: str, config: dict, kill_at: int) -> int:
    """Run the child until it reports step `kill_at`, SIGKILL it; return the last step it reported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, json.dumps(config, default=str)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    reported = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step"):
            reported = int(line.split()[1])
            if reported >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=60)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL, (
        f"child exited with {proc.returncode} before step {kill_at}:\n{stderr}"
    )
    return reported


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], context: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs ({context})"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["online", "experiment"])
def test_sigkill_at_a_random_step_then_resume_gives_identical_weights(kind, tmp_path):
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    total = 188 if kind == "online" else 141
    first, second = sorted(rng.sample(range(3, total - 40), 2))
    context = f"kill steps {first} and {second} (seed {seed})"
    if kind == "online":
        reference = run_online(OnlineConfig(**ONLINE))
        config = {**ONLINE, "checkpoint_dir": str(tmp_path / "run"), "resume": True}
    else:
        cache = tmp_path / "cache"
        reference_dir = tmp_path / "reference"
        expected = run_experiment(
            ExperimentConfig(**EXPERIMENT, cache_dir=cache, checkpoint_dir=reference_dir)
        )
        config = {**EXPERIMENT, "cache_dir": str(cache), "checkpoint_dir": str(tmp_path / "run")}
    reported = run_and_kill(kind, config, first)
    if reported > config["checkpoint_every_steps"]:  # a checkpoint was written (it may be the previous)
        assert any((tmp_path / "run" / name).exists() for name in ("last.pt", "last.prev.pt")), context
    if kind == "online":
        run_and_kill(kind, config, second)  # the resumed run is killed too
    if kind == "online":
        resumed = run_online(OnlineConfig(**config))
        assert resumed.resumed_from is not None, context
        assert resumed.partitions == reference.partitions, context
        assert_same_weights(reference.model.state_dict(), resumed.model.state_dict(), context)
        final = load_model(tmp_path / "run" / "model.pt")[0].state_dict()
        assert_same_weights(reference.model.state_dict(), final, context)
    else:
        result = run_experiment(ExperimentConfig(**config))
        reference_model = load_model(reference_dir / "model.pt")[0].state_dict()
        assert_same_weights(
            reference_model, load_model(tmp_path / "run" / "model.pt")[0].state_dict(), context
        )
        assert result["history"] == expected["history"], context  # every evaluation, same numbers
        assert result["test_auc"] == expected["test_auc"], context
    assert not list((tmp_path / "run").glob(".*.tmp")), "a temporary file was left behind"


def test_truncated_checkpoint_is_rejected_and_the_previous_one_used(tmp_path, monkeypatch):
    reference = run_online(OnlineConfig(**ONLINE))
    config = OnlineConfig(**{**ONLINE, "checkpoint_dir": tmp_path, "resume": True})
    interrupted(lambda: run_online(config), 60, monkeypatch)  # checkpoints at steps 56 (last), 49 (previous)
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    for stale in (".last.pt.k1ll3d.tmp", ".model.pt.k1ll3d.tmp"):  # writes killed half-way
        (tmp_path / stale).write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable checkpoint"):
        safe_load(last)
    messages: list[str] = []
    resumed = run_online(config, log=messages.append)
    assert any("damaged checkpoint skipped" in m and "last.pt: unreadable checkpoint" in m for m in messages)
    assert any(
        m.startswith("resumed from") and m.split()[2].endswith("last.prev.pt") and "step 49" in m
        for m in messages
    )
    assert resumed.resumed_from.endswith("last.prev.pt")
    assert (tmp_path / "last.pt.damaged").is_file()  # set aside: the next save cannot push the good one out
    assert not list(tmp_path.glob(".*.tmp"))
    assert resumed.partitions == reference.partitions
    assert_same_weights(reference.model.state_dict(), resumed.model.state_dict(), "truncated last.pt")


def _flip_inside_weights(path: Path, weight: torch.Tensor) -> None:
    """Flip bits inside the stored bytes of `weight` (torch's zip container does not notice)."""
    data = bytearray(path.read_bytes())
    raw = weight.detach().contiguous().numpy().tobytes()[:64]
    at = bytes(data).find(raw)
    assert at > 0
    data[at + 10] ^= 0x40
    path.write_bytes(bytes(data))


def test_corrupted_checkpoint_is_caught_by_its_checksum(tmp_path, monkeypatch):
    reference = run_online(OnlineConfig(**ONLINE))
    config = OnlineConfig(**{**ONLINE, "checkpoint_dir": tmp_path, "resume": True})
    interrupted(lambda: run_online(config), 60, monkeypatch)
    last = tmp_path / "last.pt"
    table = next(v for k, v in safe_load(last)["state"].items() if k.endswith("weight") and v.dim() == 2)
    _flip_inside_weights(last, table)
    torch.load(last, weights_only=True)  # loads without complaint: only the checksum sees it
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        safe_load(last)
    resumed = run_online(config)
    assert resumed.resumed_from.endswith("last.prev.pt")
    assert_same_weights(reference.model.state_dict(), resumed.model.state_dict(), "corrupted last.pt")


def test_no_usable_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    config = OnlineConfig(**{**ONLINE, "checkpoint_dir": tmp_path, "resume": True})
    interrupted(lambda: run_online(config), 30, monkeypatch)
    for name in ("last.pt", "last.prev.pt"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*last\.pt.*last\.prev\.pt.*delete them"):
        run_online(config)


def test_checkpoint_of_another_model_is_refused(planted, tmp_path):
    schema, train, valid = planted
    config = TrainConfig(epochs=1, batch_size=256, progress=False, threads=1, max_steps=3)
    Trainer(small_model(schema, train), config, schema, tmp_path).fit(train, valid)
    other = small_model(schema, train, dim=4)
    with pytest.raises(
        CheckpointError, match=r"last\.pt: written for a different model or data \(its embedding"
    ):
        Trainer(other, config, schema, tmp_path).fit(train, valid)


def nan_dataset(tmp_path: Path, planted_data) -> EncodedDataset:
    schema, train, _ = planted_data
    chunk = train.shard(0)
    chunk.dense[[7, 700]] = [[float("nan")], [float("inf")]]
    return EncodedDataset.write(tmp_path / "nan", schema, [chunk, train.shard(1)], shard_rows=1500)


def small_model(schema, train, dim: int = 8):
    from featmux.embeddings import Budget, EmbeddingSpec, build_embedding
    from featmux.models import build_model

    torch.manual_seed(0)
    spec = EmbeddingSpec("unified", dim, Budget(fraction=1.0))
    return build_model(
        "dcnv2", build_embedding(schema.categorical, spec, train.fit_vocabulary()), 1, {"hidden": [16]}
    )


NAN_CONFIG = TrainConfig(epochs=2, batch_size=256, progress=False, threads=1, seed=1)


def test_nan_loss_stops_with_the_batch_named_and_saved(planted, tmp_path):
    schema, _, valid = planted
    train = nan_dataset(tmp_path, planted)
    model = small_model(schema, train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, NAN_CONFIG, schema, tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(epoch 0, batch \d+ of the epoch\)") as err:
        trainer.fit(train, valid)
    message = str(err.value)
    assert "NaN/Inf numeric features" in message and "on_nonfinite='skip'" in message
    assert "rows give a non-finite loss: positions" in message
    dump = safe_load_dump(err.value.dump)
    assert not torch.isfinite(dump["dense"]).all() and dump["bad_rows"].numel() >= 1
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert trainer.state.step == err.value.step - 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it did train before


def safe_load_dump(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_nan_loss_skipped_when_configured(planted, tmp_path):
    schema, _, valid = planted
    train = nan_dataset(tmp_path, planted)
    model = small_model(schema, train)
    events: list[dict] = []
    config = TrainConfig(**{**NAN_CONFIG.__dict__, "on_nonfinite": NonFinitePolicy.SKIP})
    trainer = Trainer(model, config, schema, on_event=events.append)
    result = trainer.fit(train, valid)
    skipped = [e for e in events if e["event"] == "nonfinite"]
    assert trainer.state.skipped_batches == len(skipped)
    assert 2 <= len(skipped) <= 4  # two bad rows per epoch, in one or two batches
    assert result.steps == 2 * train.num_batches(256)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert result.best_valid.auc > 0.7


def test_nonfinite_weights_stop_even_when_skipping(planted, tmp_path):
    schema, train, valid = planted
    model = small_model(schema, train)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "embedding" not in n).fill_(float("nan"))
    config = TrainConfig(**{**NAN_CONFIG.__dict__, "on_nonfinite": NonFinitePolicy.SKIP})
    with pytest.raises(NonFiniteLossError, match="weights are already NaN/Inf") as err:
        Trainer(model, config, schema).fit(train, valid)
    assert "skip such batches" not in str(err.value)  # skipping cannot help: not suggested
