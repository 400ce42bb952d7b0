"""Two CPU processes (gloo) train DCN-v2 over a sharded unified table on real Frappe rows.

Checked against a single process that trains the plain featmux model (no TorchRec) on the same global
batches with the equivalent optimizers (sparse Adagrad for the table, Adam for the dense part):

    per-step training loss   |distributed - single| <= 1e-5   (the bound asserted)
    validation / test AUC    |distributed - single| <= 1e-4

and a run stopped at step 4 (mid-epoch, table-wise shards) resumes from its sharded checkpoint under a
column-wise plan (it reports resuming at step 4 and training 12 steps) and ends where the
uninterrupted run ends: losses and exported weights within 1e-6, test AUC within 1e-6.
Adagrad and Adam are scale-free, so test_training.py also checks SGD on both parts, padding, a
data_parallel table, dropout, NaN losses and crashes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _dist_workers import STEPS, TABLE_EPS, TABLE_LR, first_launch, frappe_config, second_launch

from featmux.data.prepare import prepare
from featmux.distributed import launch_local
from featmux.embeddings import build_embedding
from featmux.models import build_model
from featmux.training.checkpoint import load_model
from featmux.training.trainer import evaluate

LOSS_TOL = 1e-5
AUC_TOL = 1e-4


def _single_process(data: Path, cache: Path) -> dict:
    """The reference: featmux's own model and layer, one process, the same global batches and seeds."""
    config = frappe_config(data, cache, STEPS, None)
    prepared = prepare(config.dataset, config.data, config.dataset_options, config.cache_dir)
    torch.manual_seed(config.seed)  # the same start as run_distributed_training (and featmux train)
    layer = build_embedding(prepared.schema.categorical, config.embedding_spec(), prepared.vocabulary)
    model = build_model(config.model, layer, len(prepared.schema.numeric), config.model_options)
    layer.set_sparse_gradients(True)
    tables = torch.optim.Adagrad(layer.table_parameters(), lr=TABLE_LR, eps=TABLE_EPS)
    dense = model.dense_parameters()
    adam = torch.optim.Adam(dense, lr=config.learning_rate)
    losses, evals = [], []
    for epoch in range(config.epochs):
        for batch in prepared.train.batches(config.batch_size, shuffle=True, seed=config.seed, epoch=epoch):
            tables.zero_grad()
            adam.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(batch.sparse, batch.dense), batch.labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dense, 10.0)  # TrainConfig.max_grad_norm
            tables.step()
            adam.step()
            losses.append(loss.item())
            if len(losses) % config.eval_every_steps == 0:
                evals.append((evaluate(model, prepared.valid).auc, evaluate(model, prepared.test).auc))
    best = max(range(len(evals)), key=lambda i: evals[i][0])  # first best, as the trainer keeps it
    return {
        "losses": losses,
        "valid_aucs": [v for v, _ in evals],
        "valid_auc": evals[best][0],
        "test_auc": evals[best][1],
        "test": prepared.test,
    }


@pytest.mark.real_data
@pytest.mark.slow
def test_two_gloo_processes_match_one_and_resume(frappe_small, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "runs"
    first = launch_local(first_launch, 2, (frappe_small, cache, out), timeout_s=600)
    resumed = launch_local(second_launch, 2, (frappe_small, cache, out), timeout_s=600)
    single = _single_process(frappe_small, cache)

    # 1. sharded lookups are the featmux lookups (every method, several plans), weights gather back
    for rank in first:
        assert all(v == 0.0 for v in rank["lookups"].values()), rank["lookups"]
    full = first[0]["full"]
    same = ("losses", "history", "valid_auc", "test_auc", "steps")
    assert all(full[k] == first[1]["full"][k] for k in same)  # every rank reports the same
    assert [r["full"]["distributed"].pop("rank") for r in first] == [0, 1]
    assert full["distributed"] == first[1]["full"]["distributed"]
    assert full["distributed"]["world_size"] == 2 and full["distributed"]["tables"] == [
        "unified_t0",
        "unified_t1",
    ]
    assert "table_wise" in full["distributed"]["plan"]

    # 2. two processes == one process with the same global batch
    assert len(full["losses"]) == STEPS
    np.testing.assert_allclose(full["losses"], single["losses"], rtol=0, atol=LOSS_TOL)
    valid_aucs = [h["valid_auc"] for h in full["history"]]
    np.testing.assert_allclose(valid_aucs, single["valid_aucs"], rtol=0, atol=AUC_TOL)
    assert abs(full["valid_auc"] - single["valid_auc"]) <= AUC_TOL
    assert abs(full["test_auc"] - single["test_auc"]) <= AUC_TOL
    assert full["test_auc"] > 0.8  # it learned something

    # 3. stopped at step 4 (table-wise), resumed column-wise: the uninterrupted run's numbers
    partial = first[0]["partial"]
    assert partial["steps"] == 4
    np.testing.assert_allclose(partial["losses"], full["losses"][:4], rtol=0, atol=1e-6)
    assert resumed[0]["steps"] == STEPS
    assert partial["distributed"]["resumed_from_step"] is None
    assert resumed[0]["distributed"]["resumed_from_step"] == 4  # it did resume, from the step-4 checkpoint
    assert resumed[0]["distributed"]["steps_this_launch"] == STEPS - 4
    (row,) = [
        line for line in resumed[0]["distributed"]["plan"].splitlines() if line.startswith("| unified_t0 ")
    ]
    assert "column_wise" in row and "0: " in row and "1: " in row  # columns really split over both ranks
    np.testing.assert_allclose(resumed[0]["losses"], full["losses"], rtol=0, atol=1e-6)
    assert abs(resumed[0]["test_auc"] - full["test_auc"]) <= 1e-6
    uninterrupted, _ = load_model(out / "full" / "model.pt")
    continued, _ = load_model(out / "resumed" / "model.pt")
    for key, value in uninterrupted.state_dict().items():  # the weights it ends with, not only the AUC
        assert (continued.state_dict()[key] - value).abs().max() <= 1e-6, key

    # 4. gathered predictions are in dataset order; a snapshot of the sharded weights restores them
    for rank in first:
        p = rank["predictions"]
        assert p["label_order_mismatch"] == 0 and p["restored_diff"] == 0 and p["moved_diff"] > 0, p

    # 5. the exported single-process model file scores what the distributed evaluation gathered
    model, _ = load_model(out / "full" / "model.pt")
    assert type(model.embedding).__name__ == "UnifiedEmbedding"
    assert abs(evaluate(model, single["test"]).auc - full["test_auc"]) <= 1e-6
