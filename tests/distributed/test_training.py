"""Two gloo processes: where a distributed run must equal one process, or refuse, or recover.

- SGD tables and SGD dense (scale-sensitive: a gradient off by the world size shows) over global
  batches of 1001 rows (every batch padded on rank 1), one table data_parallel, checked against one
  process, with and without batch norm (synced, padding left out); predictions gathered with a
  padding batch size; bf16 autocast applied.
- A NaN loss on one rank: every rank stops with the last checkpoint kept, or every rank skips it.
- Dropout: distinct masks per rank; a run whose rank 1 is killed mid-step resumes (a damaged newest
  checkpoint falls back to the previous one) and ends with the uninterrupted run's weights, bit for
  bit; a save that lost `last` between its two renames is recovered with a message.
- Rank 0 encoding for longer than the collective timeout does not kill the others.
- The CLI under torchrun, end to end; CLI refusals.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _dist_workers import (
    BATCH_NORM_MODEL,
    PADDED_BATCH,
    SGD_TABLE_LR,
    dropout_run,
    killed_mid_step,
    nonfinite_runs,
    resume_twice,
    sgd_and_refusals,
    sgd_config,
    slow_rank0_prepare,
)
from typer.testing import CliRunner

from featmux.cli.main import app
from featmux.data.prepare import prepare
from featmux.distributed import launch_local
from featmux.embeddings import build_embedding
from featmux.models import build_model
from featmux.training.checkpoint import load_model
from featmux.training.trainer import predict

pytestmark = [pytest.mark.real_data, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _single_process_sgd(data: Path, cache: Path, model_options: dict | None = None) -> dict:
    """One process, the featmux layer: SGD on the tables (table lr), SGD on the dense part (clipped)."""
    config = sgd_config(data, cache, **({"model_options": model_options} if model_options else {}))
    prepared = prepare(config.dataset, config.data, config.dataset_options, config.cache_dir)
    torch.manual_seed(config.seed)
    layer = build_embedding(prepared.schema.categorical, config.embedding_spec(), prepared.vocabulary)
    model = build_model(config.model, layer, 0, config.model_options)
    tables = torch.optim.SGD(layer.table_parameters(), lr=SGD_TABLE_LR)
    dense = model.dense_parameters()
    sgd = torch.optim.SGD(dense, lr=config.learning_rate)
    losses = []
    for batch in prepared.train.batches(config.batch_size, shuffle=True, seed=config.seed, epoch=0):
        tables.zero_grad()
        sgd.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch.sparse, batch.dense), batch.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dense, 10.0)
        tables.step()
        sgd.step()
        losses.append(loss.item())
    labels, logits = predict(model, prepared.valid, 4096)
    return {"losses": losses, "labels": labels, "logits": logits}


def test_sgd_data_parallel_table_padding_bf16_and_synced_batch_norm(frappe_small, tmp_path):
    cache = tmp_path / "cache"
    ranks = launch_local(sgd_and_refusals, 2, (frappe_small, cache), timeout_s=600)
    single = _single_process_sgd(frappe_small, cache)
    got = ranks[0]
    assert got["data_parallel_tables"] == [got["replicated"]]  # the one asked for, no other
    assert len(got["losses"]) == math.ceil(8192 / PADDED_BATCH) == 9
    np.testing.assert_allclose(got["losses"], single["losses"], rtol=0, atol=2e-6)
    assert got["losses"][-1] < got["losses"][0] - 0.02  # it learned something in 9 steps
    np.testing.assert_array_equal(got["labels"], single["labels"])  # dataset order, padding dropped
    np.testing.assert_allclose(got["logits"], single["logits"], rtol=0, atol=2e-5)
    plain, bf16 = got["bf16_losses"]
    assert plain != bf16 and abs(plain - bf16) < 1e-2  # autocast applied, not ignored
    norm = _single_process_sgd(frappe_small, cache, BATCH_NORM_MODEL)
    np.testing.assert_allclose(got["bn_losses"], norm["losses"], rtol=0, atol=2e-6)
    assert max(abs(a - b) for a, b in zip(got["bn_losses"], got["losses"], strict=True)) > 1e-3  # BN matters
    np.testing.assert_array_equal(got["bn_labels"], norm["labels"])
    np.testing.assert_allclose(got["bn_logits"], norm["logits"], rtol=0, atol=2e-5)  # running statistics too
    assert ranks[1]["losses"] == got["losses"]


def test_nonfinite_loss_on_one_rank_stops_or_skips_every_rank(frappe_small, tmp_path):
    ranks = launch_local(
        nonfinite_runs, 2, (frappe_small, tmp_path / "cache", tmp_path / "runs"), timeout_s=600
    )
    for rank in ranks:
        stop, skip = rank["stop"], rank["skip"]
        assert stop["step"] == 3 and "non-finite loss (nan) at step 3" in stop["error"]
        assert "on rank(s) [1]" in stop["error"] and "last checkpoint" in stop["error"]
        assert stop["last_step"] == 2 and stop["damaged"] == []  # the step-2 checkpoint, intact
        assert stop["finite_dense"]
        assert skip["skipped"] == 1 and len(skip["losses"]) == 9
        assert math.isnan(skip["losses"][2]) and all(
            math.isfinite(v) for i, v in enumerate(skip["losses"]) if i != 2
        )
        assert skip["finite_dense"] and skip["last_step"] == 9
    assert ranks[0]["stop"]["finite_tables"] and ranks[0]["skip"]["finite_tables"]


def test_dropout_kill_resume_and_checkpoint_recovery(frappe_small, tmp_path):
    cache = tmp_path / "cache"
    full = launch_local(dropout_run, 2, (frappe_small, cache, tmp_path / "full"), timeout_s=600)
    assert not torch.equal(full[0]["next_draw"], full[1]["next_draw"])  # each rank its own RNG stream
    reference = full[0]["result"]
    assert reference["steps"] == 8 and reference["distributed"]["resumed_from_step"] is None
    assert reference["distributed"]["data_parallel_tables"] == []

    run = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match=r"died|by peer"):  # rank 0 sees its peer gone, or its death
        launch_local(killed_mid_step, 2, (frappe_small, cache, run, 7), timeout_s=600)
    assert json.loads((run / "last" / "featmux.json").read_text())["train_state"]["step"] == 6
    damaged = next(p for p in sorted((run / "last").iterdir()) if p.suffix == ".distcp")
    blob = bytearray(damaged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in the newest checkpoint
    damaged.write_bytes(bytes(blob))

    ranks = launch_local(resume_twice, 2, (frappe_small, cache, run), timeout_s=600)
    got = ranks[0]
    resumed = got["resumed"]
    assert resumed["distributed"]["resumed_from_step"] == 4  # last.prev: `last` was damaged
    assert resumed["distributed"]["steps_this_launch"] == 4
    assert any("corrupted" in m and "do not match their digests" in m for m in got["first_log"])
    assert resumed["losses"] == reference["losses"]  # dropout masks and all: bit for bit
    a, _ = load_model(tmp_path / "full" / "model.pt")
    b, _ = load_model(run / "model.pt")
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    again = got["again"]["distributed"]
    assert again["resumed_from_step"] == 8 and again["steps_this_launch"] == 0
    assert any("interrupted between its two renames" in m for m in got["second_log"])
    fresh = got["fresh"]["distributed"]  # --no-resume: the same run again from step 0
    assert fresh["resumed_from_step"] is None and fresh["steps_this_launch"] == 8
    assert got["fresh"]["losses"] == reference["losses"]


def test_rank0_encoding_longer_than_the_collective_timeout(frappe_small, tmp_path):
    ranks = launch_local(slow_rank0_prepare, 2, (frappe_small, tmp_path, 3.0, 6.0), timeout_s=600)
    assert [r["steps"] for r in ranks] == [1, 1]


def test_cli_under_torchrun(frappe_small, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "result.json"
    args = [
        str(torchrun), "--nproc-per-node", "2", "--master-port", str(_port()), "-m", "featmux.cli.main",
        "train", "--distributed", "--dataset", "frappe", "--data", str(frappe_small),
        "--cache-dir", str(tmp_path / "cache"), "--embedding", "unified", "--budget", "rows:3000",
        "--num-tables", "2", "--embedding-dim", "8", "--model-option", "hidden=[32]", "--batch-size", "1001",
        "--max-steps", "3", "--threads", "1", "--no-progress", "--sharding", "table_wise",
        "--table-optimizer", "sgd", "--table-learning-rate", "0.1", "--backend", "gloo",
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(out), "--no-preset",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    d = result["distributed"]
    assert result["steps"] == 3 and d["world_size"] == 2 and d["backend"] == "gloo"
    assert d["table_optimizer"] == "sgd" and d["table_init"] == "featmux" and len(d["peak_rss_bytes"]) == 2
    assert d["data_parallel_tables"] == [] and "table_wise" in d["plan"]
    model, _ = load_model(tmp_path / "ckpt" / "model.pt")
    assert type(model.embedding).__name__ == "UnifiedEmbedding"


def _port() -> int:
    from featmux.distributed.launch import free_port

    return free_port()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--distributed", "--optimizer", "row_adam"], "does not apply with --distributed"),
        (["--distributed", "--backend", "nccl"], "backend nccl needs --device cuda"),
        (["--distributed", "--backend", "mpi"], "choose one of"),
        (["--sharding", "table_wise"], "--sharding apply only with --distributed"),
        (["--column-shard-width", "8"], "apply only with --distributed"),
        (["--distributed", "--embedding", "dhe"], "trains the collisionless, hashing, unified embeddings"),
        (["--distributed", "--embedding", "hashing", "--precision", "int8"], "--precision does not apply"),
        (["--distributed", "--prune", "0.5"], "--prune does not apply with --distributed"),
    ],
)
def test_cli_refuses_what_distributed_would_ignore(flags, message, tmp_path):
    result = CliRunner().invoke(app, ["train", "--no-progress", "--cache-dir", str(tmp_path), *flags])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output
