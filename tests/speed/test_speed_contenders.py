"""The training part's contenders on tiny data: plain-bf16, featmux-dense-adam, the peers under autocast."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from featmux.benchmarks.speed.cli import speed_command
from featmux.benchmarks.speed.contenders import featmux as featmux_contender
from featmux.benchmarks.speed.contenders import plain as plain_contender
from featmux.benchmarks.speed.workloads import save_split
from featmux.embeddings.base import INIT_STD
from featmux.training.optim import RowAdam

REPO = Path(__file__).resolve().parents[2]
VOCAB = [5, 7, 11]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Exported arrays as the driver writes them: 3 fields, labels that depend on field 0."""
    rng = np.random.default_rng(0)
    for split, rows in (("train", 640), ("valid", 200), ("test", 200)):
        ids = np.stack([rng.integers(0, v, rows) for v in VOCAB], axis=1)
        labels = (rng.random(rows) < np.where(ids[:, 0] < 2, 0.8, 0.2)).astype(np.float32)
        save_split(tmp_path, split, ids, labels)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_sizes": VOCAB}))
    return tmp_path


def _spec(data: Path, **extra) -> dict:
    return {
        "dataset": "frappe",
        "model": "dcnv2",
        "data": str(data),
        "method": "collisionless",
        "embedding_dim": 4,
        "epochs": 2,
        "hidden": [8],
        "cross_layers": 1,
        "batch_size": 64,
        "learning_rate": 1e-2,
        "threads": 1,
        "seed": 0,
        "init_std": INIT_STD,
        "batch_norm": False,
        **extra,
    }


def _linear_dtypes(monkeypatch, module) -> list[tuple[bool, torch.dtype]]:
    """Record (training?, output dtype) of every nn.Linear call of the model `module` builds."""
    seen: list[tuple[bool, torch.dtype]] = []
    build = module.build_model

    def recording(*args, **kwargs):
        model = build(*args, **kwargs)
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_hook(lambda m, _i, out: seen.append((m.training, out.dtype)))
        return model

    monkeypatch.setattr(module, "build_model", recording)
    return seen


@pytest.mark.parametrize("bf16", [False, True])
def test_plain_trains_under_bf16_autocast_and_evaluates_in_float32(tiny, monkeypatch, bf16):
    seen = _linear_dtypes(monkeypatch, plain_contender)
    result = plain_contender.run_plain(_spec(tiny, bf16=bf16))
    assert len(result["history"]) == 2 and result["history"][-1]["valid_auc"] > 0.6
    assert result["dense_flops_per_sample"] == 6 * (12 * 12 + 12 * 8 + 20 * 1)  # 1 cross, MLP [8], head
    train = {dtype for training, dtype in seen if training}
    assert train == ({torch.bfloat16} if bf16 else {torch.float32})
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    assert any("autocast" in n for n in result["notes"]) is bf16


def test_featmux_dense_adam_trains_every_parameter_with_one_dense_adam(tiny, monkeypatch):
    trainers = []

    class Recording(featmux_contender.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(featmux_contender, "Trainer", Recording)
    dense = featmux_contender.run_featmux_dense_adam(_spec(tiny))
    row = featmux_contender.run_featmux(_spec(tiny))
    (opt,) = trainers[0].optimizers
    assert type(opt) is torch.optim.Adam
    table_ids = {id(p) for p in trainers[0].model.embedding.table_parameters()}
    assert table_ids <= {id(p) for g in opt.param_groups for p in g["params"]}
    assert [type(o) for o in trainers[1].optimizers] == [RowAdam, torch.optim.Adam]
    assert "optimizer adam" in dense["notes"][0] and "optimizer row_adam" in row["notes"][0]
    assert dense["history"][-1]["valid_auc"] > 0.6 and 0.0 < dense["history"][-1]["test_auc"] < 1.0


def _peers_module():
    spec = importlib.util.spec_from_file_location("speed_peers", REPO / "benchmarks" / "speed" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("off_thread", [False, True])
def test_peer_loop_wraps_training_in_autocast_and_checks_it_held(off_thread):
    """The check counts bf16 Linear outputs; a loop that trains in another thread escapes autocast."""
    peers = _peers_module()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = {"a": np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)}
    y = (x["a"][:, 0] > 0).astype(np.float32)

    def step() -> None:
        for i in range(0, 64, 16):
            out = model(torch.from_numpy(x["a"][i : i + 16])).squeeze(-1)
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(out.float(), torch.from_numpy(y[i : i + 16])).backward()
            opt.step()

    def train_epoch() -> None:
        if off_thread:
            worker = threading.Thread(target=step)
            worker.start()
            worker.join()
        else:
            step()

    def predict(inputs: dict) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(inputs["a"]))).squeeze(-1).numpy()

    spec = {"epochs": 2, "library": "test", "model": "mlp", "bf16": True}
    result = peers._loop(spec, model, train_epoch, predict, (x, y), (x, y), [])
    check = result["autocast_check"]
    calls = 2 * 4 * 2  # epochs x batches x Linear layers; evaluation calls are not counted
    if off_thread:  # autocast is thread-local: the worker's forward ran in float32
        assert check == {"linear_outputs": {"float32": calls}, "other_threads": calls}
    else:
        assert check == {"linear_outputs": {"bfloat16": calls}, "other_threads": 0}
    assert len(result["history"]) == 2 and any("autocast" in n for n in result["notes"])


def _peers_python() -> Path | None:
    """The peers' interpreter, opt-in (~20 s per library to import them): FEATMUX_PEERS_PYTHON."""
    candidate = os.environ.get("FEATMUX_PEERS_PYTHON")
    return Path(candidate) if candidate and Path(candidate).exists() else None


@pytest.mark.skipif(
    _peers_python() is None,
    reason="set FEATMUX_PEERS_PYTHON to the python of benchmarks/speed/install_peers.sh's venv",
)
@pytest.mark.parametrize("library", ["deepctr", "rechub"])
def test_peers_train_under_autocast_in_their_own_fit(tiny, tmp_path, library):
    """Wrapping the peer's own epoch call puts its every training Linear under bf16 (one thread)."""
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(_spec(tiny, library=library, model="deepfm", epochs=1, bf16=True)))
    script = REPO / "benchmarks" / "speed" / "peers.py"
    done = subprocess.run([str(_peers_python()), str(script), str(spec_path), str(result_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(result_path.read_text())
    outputs = result["autocast_check"]["linear_outputs"]
    assert set(outputs) == {"bfloat16"} and outputs["bfloat16"] >= 10  # 10 batches, >= 1 Linear each
    assert result["autocast_check"]["other_threads"] == 0
    assert 0.0 < result["history"][0]["test_auc"] < 1.0


def test_unknown_library_is_one_error_line():
    import typer

    app = typer.Typer()
    app.command()(speed_command)
    done = CliRunner().invoke(app, ["--library", "featmux", "--library", "nope", "--out", "/nonexistent"])
    text = " ".join(done.output.split())  # rich wraps long lines
    assert done.exit_code == 2 and text.startswith("error: unknown --library nope (choose from featmux,")
    assert "Traceback" not in done.output
