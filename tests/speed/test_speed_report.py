"""The speed benchmark's bookkeeping: the plain baseline layer, summaries, ratios and the Markdown report."""

from __future__ import annotations

import numpy as np
import torch

from featmux.benchmarks.speed.config import SpeedConfig
from featmux.benchmarks.speed.contenders import all_contenders, labels
from featmux.benchmarks.speed.contenders.featmux import dense_flops_per_sample
from featmux.benchmarks.speed.contenders.plain import PlainEmbeddingBag
from featmux.benchmarks.speed.driver import _training_specs
from featmux.benchmarks.speed.loop import use_torch_dropout
from featmux.benchmarks.speed.report import (
    loop_and_inference_markdown,
    ratios,
    render_markdown,
    summarise_inference,
    summarise_loop,
    summarise_training,
)
from featmux.benchmarks.speed.workloads import encoded_splits, int_schema, save_split
from featmux.models import build_model
from featmux.sparse import SparseFeatures


def test_plain_embedding_bag_reads_per_field_rows():
    layer = PlainEmbeddingBag(int_schema(2).categorical, 3, [4, 5])
    ids = torch.tensor([[0, 0], [3, 4]])
    out = layer(SparseFeatures(ids))
    assert out.shape == (2, 2, 3)
    torch.testing.assert_close(out[1, 1], layer.bag.weight[4 + 4])
    model = build_model("deepfm", layer, 0, {"hidden": [8]})
    assert dense_flops_per_sample(model) == 6 * (6 * 8 + 8 * 1)


def _run(contender: str, seconds: list[float], aucs: list[float], test: float) -> dict:
    history = [
        {"train_seconds": s, "valid_auc": a, "test_auc": test, "test_logloss": 0.4}
        for s, a in zip(seconds, aucs, strict=True)
    ]
    return {
        "dataset": "synthetic",
        "model": "deepfm",
        "contender": contender,
        "history": history,
        "train_rows": 1000,
        "peak_rss_bytes": 2**30,
        "threads": 2,
        "loadavg_start": [0.5, 0.5, 0.5],
        "loadavg_end": [0.6, 0.6, 0.6],
    }


def test_ratios_use_the_faster_peer_and_a_common_auc_target():
    runs = [
        _run("featmux", [1.0, 2.0], [0.70, 0.75], 0.74),
        _run("deepctr", [4.0, 8.0], [0.71, 0.73], 0.72),
        _run("rechub", [5.0, 10.0], [0.69, 0.74], 0.73),
        _run("plain", [2.0, 4.0], [0.70, 0.74], 0.73),
        {"dataset": "synthetic", "model": "deepfm", "contender": "featmux-bf16", "error": "boom"},
    ]
    training = summarise_training(runs)
    by = {r["contender"]: r for r in training}
    assert by["featmux"]["samples_per_s"] == 1000.0  # 2 epochs x 1000 rows in 2 s
    assert by["deepctr"]["target_valid_auc"] == 0.73  # the lowest best valid AUC of the group
    assert by["featmux"]["seconds_to_target"] == 2.0 and by["deepctr"]["seconds_to_target"] == 8.0
    (ratio,) = ratios(training)
    assert ratio["best_peer"] == "deepctr" and ratio["speedup_vs_best_peer"] == 4.0
    assert ratio["speedup_vs_plain"] == 2.0
    assert ratio["time_to_auc_speedup_vs_best_peer"] == 4.0
    assert abs(ratio["auc_delta_vs_best_peer_test"] - 0.01) < 1e-12
    report = {
        "created": "now",
        "machine": {"cpu": "cpu", "cpu_flags": ["avx2"], "cores": 2, "torch": "2", "threads": 2,
                    "loadavg": [0.1, 0.1, 0.1], "bf16": False, "bf16_native": False,
                    "bf16_reason": "forced off"},
        "gemm_peak_gflops": 100.0,
        "training": training,
        "ratios": [ratio],
    }  # fmt: skip
    text = render_markdown(report)
    assert "4.00x" in text and "error: boom" in text


def test_shard_cache_follows_re_exported_arrays(tmp_path):
    def export(rows: int, offset: int) -> None:
        for split in ("train", "valid", "test"):
            ids = np.arange(rows * 2, dtype=np.int64).reshape(rows, 2) + offset
            save_split(tmp_path, split, ids, np.zeros(rows, np.float32))

    export(10, 0)
    assert len(encoded_splits(tmp_path)["train"]) == 10
    export(6, 100)  # a rerun with other rows: featmux must not train on the stale cache
    train = encoded_splits(tmp_path)["train"]
    assert len(train) == 6
    assert next(iter(train.chunks())).ids[0].tolist() == [100, 101]


def _loop_runs() -> list[dict]:
    runs = []
    for repeat in range(2):
        runs.append({"what": "data", "repeat": repeat, "samples_per_s": 1e6})
        for bf16, base in ((False, 100.0), (True, 300.0)):
            runs.append(
                {
                    "what": "step",
                    "repeat": repeat,
                    "bf16": bf16,
                    "dropout": "FastDropout",
                    "samples_per_s": base,
                }
            )
            runs.append(
                {
                    "what": "step",
                    "repeat": repeat,
                    "bf16": bf16,
                    "dropout": "nn.Dropout",
                    "samples_per_s": base / 2,
                }
            )
            runs.append(
                {
                    "what": "fit",
                    "repeat": repeat,
                    "bf16": bf16,
                    "dropout": "FastDropout",
                    "epochs": 2,
                    "samples_per_s": base * 0.9,
                    "train_seconds": 10.0,
                    "step_seconds": 9.9,
                }
            )
    return runs  # fmt: skip


def test_loop_summary_ratios_and_report():
    loop = {"runs": _loop_runs()}
    s = summarise_loop(loop)
    assert s["bf16_step_speedup"] == 3.0 and s["bf16_fit_speedup"] == 3.0
    assert s["fast_dropout_speedup_fp32"] == 2.0
    assert abs(s["fit_over_step_bf16"] - 0.9) < 1e-12
    assert abs(s["loop_share_fp32"] - 0.01) < 1e-12
    inference = {
        "runs": [
            {"repeat": 0, "bf16": bf16, "samples_per_s": v, "latency_p50_ms": 1.0, "latency_p99_ms": 2.0}
            for bf16, v in ((False, 1000.0), (True, 2500.0))
        ],
        "test_auc_fp32": 0.98,
        "test_auc_bf16": 0.979,
        "test_rows": 100,
        "train_epochs": 1,
    }
    assert summarise_inference(inference)["bf16_throughput_speedup"] == 2.5
    text = "\n".join(loop_and_inference_markdown({"loop": loop, "inference": inference}))
    assert "3.00x" in text and "2.50x" in text and "Trainer.fit (2 epochs)" in text


def test_loop_compares_against_torch_dropout():
    model = build_model("dcnv2", PlainEmbeddingBag(int_schema(2).categorical, 3, [4, 5]), 0,
                        {"hidden": [8, 8], "dropout": 0.3})  # fmt: skip
    assert use_torch_dropout(model) == 2
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2


def test_contenders_are_found_by_module_and_bf16_adds_a_run_per_workload(tmp_path):
    found = all_contenders()
    assert next(iter(found)) == "featmux" and {"plain", "deepctr", "rechub"} <= set(found)
    assert found["deepctr"].run is None and found["plain"].run is not None
    assert labels()["plain"] == "plain PyTorch (sparse)"
    for bf16 in (True, False):
        config = SpeedConfig(out_dir=tmp_path, work_dir=tmp_path, bf16=bf16, libraries=("featmux", "plain"))
        tags = [tag for tag, _ in _training_specs(config)]
        with_bf16 = [t for t in tags if t.endswith("featmux-bf16")]
        assert len(with_bf16) == (4 if bf16 else 0)  # 2 datasets x 2 models
