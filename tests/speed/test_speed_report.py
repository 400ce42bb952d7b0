"""The speed benchmark's bookkeeping: the plain baseline layer, summaries, ratios and the Markdown report."""

from __future__ import annotations

import numpy as np
import torch

from featmux.benchmarks.speed.config import SpeedConfig
from featmux.benchmarks.speed.contenders import all_contenders, labels
from featmux.benchmarks.speed.contenders.plain import PlainEmbeddingBag
from featmux.benchmarks.speed.driver import _training_specs
from featmux.benchmarks.speed.loop import use_torch_dropout
from featmux.benchmarks.speed.report import (
    flop_rates,
    loop_and_inference_markdown,
    ratios,
    render_markdown,
    summarise_inference,
    summarise_loop,
    summarise_training,
)
from featmux.benchmarks.speed.workloads import dense_flops_per_sample, encoded_splits, int_schema, save_split
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


def _run(contender: str, seconds: list[float], aucs: list[float], test: float, **extra) -> dict:
    history = [
        {"train_seconds": s, "valid_auc": a, "test_auc": test, "test_logloss": 0.4}
        for s, a in zip(seconds, aucs, strict=True)
    ]
    return {
        "dataset": "synthetic",
        "model": "deepfm",
        "contender": contender,
        "bf16": contender.endswith("-bf16"),
        "history": history,
        "train_rows": 1000,
        "peak_rss_bytes": 2**30,
        "threads": 2,
        "loadavg_start": [0.5, 0.5, 0.5],
        "loadavg_end": [0.6, 0.6, 0.6],
        **extra,
    }


MACHINE = {"cpu": "cpu", "cpu_flags": ["avx2"], "cores": 2, "torch": "2", "threads": 2,
           "loadavg": [0.1, 0.1, 0.1], "bf16": True, "bf16_reason": "forced on"}  # fmt: skip


def test_ratios_use_the_faster_peer_per_precision_and_check_the_auc():
    runs = [
        _run("featmux", [1.0, 2.0], [0.70, 0.75], 0.7400, dense_flops_per_sample=25_000_000),
        _run("featmux-bf16", [0.5, 1.0], [0.70, 0.75], 0.7390, dense_flops_per_sample=25_000_000),
        _run("featmux-dense-adam", [1.5, 3.0], [0.70, 0.75], 0.7410),
        _run("deepctr", [4.0, 8.0], [0.71, 0.73], 0.7200),
        _run("deepctr-bf16", [4.0, 5.0], [0.71, 0.73], 0.7200),
        _run("rechub", [5.0, 10.0], [0.69, 0.74], 0.7300),
        _run("rechub-bf16", [2.0, 4.0], [0.69, 0.74], 0.7350, autocast_check={
            "linear_outputs": {"bfloat16": 30, "float32": 10}, "other_threads": 0}),
        _run("plain", [2.0, 4.0], [0.70, 0.74], 0.7385),
        {"dataset": "synthetic", "model": "deepfm", "contender": "plain-bf16", "error": "boom"},
    ]  # fmt: skip
    training = summarise_training(runs)
    by = {r["contender"]: r for r in training}
    assert by["featmux"]["samples_per_s"] == 1000.0  # 2 epochs x 1000 rows in 2 s
    assert by["deepctr"]["target_valid_auc"] == 0.73  # the lowest best valid AUC of the group
    assert by["featmux"]["seconds_to_target"] == 2.0 and by["deepctr"]["seconds_to_target"] == 8.0
    assert by["featmux"]["optimizer"] == "row-wise lazy Adam"
    assert by["deepctr-bf16"]["optimizer"] == by["featmux-dense-adam"]["optimizer"] == "dense Adam"
    found = {(r["numerator"], r["denominator"]): r for r in ratios(training)}
    # plain-bf16 failed: its ratios are left out, the others stay
    assert not any(d == "plain-bf16" for _, d in found)
    fp32 = found[("featmux", "deepctr")]  # the faster fp32 peer is DeepCTR-Torch (250 vs 200 samples/s)
    assert fp32["speedup"] == 4.0 and fp32["time_to_auc_speedup"] == 4.0 and fp32["headline"]
    assert abs(fp32["auc_delta"] - 0.02) < 1e-12 and not fp32["equal_auc"]
    bf16 = found[("featmux-bf16", "rechub-bf16")]  # among the bf16 runs rechub is faster (500 vs 400)
    assert bf16["speedup"] == 4.0 and bf16["equal_auc"] is False
    assert bf16["numerator_optimizer"] != bf16["denominator_optimizer"]
    same = found[("featmux-dense-adam", "deepctr")]
    assert same["numerator_optimizer"] == same["denominator_optimizer"]
    assert abs(same["speedup"] - 8.0 / 3.0) < 1e-12
    vs_plain = found[("featmux-bf16", "plain")]
    assert vs_plain["speedup"] == 4.0 and vs_plain["equal_auc"] and vs_plain["headline"]
    assert found[("featmux", "plain")]["equal_auc"]  # 0.7400 vs 0.7385: within 0.002
    assert found[("featmux-bf16", "featmux")]["speedup"] == 2.0
    rates = {r["contender"]: r for r in flop_rates(training, 100.0, 500.0)}
    assert set(rates) == {"featmux", "featmux-bf16"}
    assert rates["featmux-bf16"]["achieved_gflops"] == 50.0  # 25M FLOPs x 2000 samples/s
    assert rates["featmux-bf16"]["of_fp32_peak"] == 0.5 and rates["featmux-bf16"]["of_bf16_peak"] == 0.1
    report = {
        "created": "now",
        "config": {"lock": None},
        "machine": MACHINE,
        "gemm_peak_gflops": 100.0,
        "gemm_peak_gflops_bf16": 500.0,
        "training": training,
        "ratios": ratios(training),
    }
    text = render_markdown(report)
    assert "error: boom" in text and "under the measurement lock" not in text
    headline = text.split("## Headline")[1].split("##")[0]
    assert "- **synthetic deepfm**\n" in headline
    assert "  - featmux, dense Adam / DeepCTR-Torch: **2.67x** (dense Adam vs dense Adam)" in headline
    assert "torch-rechub, bf16 autocast: **4.00x** (row-wise lazy Adam vs dense Adam)" in headline
    assert "test AUC +0.0200: NOT equal within 0.002" in headline
    vs_plain_line = "(sparse): **4.00x** (row-wise lazy Adam vs SparseAdam (lazy)); test AUC +0.0005"
    assert vs_plain_line + ": equal within 0.002" in headline
    assert "| synthetic | deepfm | featmux, bf16 autocast | 50 | 50% | 10% |" in text
    assert "| synthetic | deepfm | featmux | 25 | 25% | 5% |" in text
    assert "75.0% of 40 nn.Linear outputs in bf16, 0 off the calling thread" in text


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
    assert next(iter(found)) == "featmux"
    assert {"plain", "deepctr", "rechub", "featmux-dense-adam"} <= set(found)
    assert found["deepctr"].run is None and found["plain"].run is not None
    assert labels()["plain"] == "plain PyTorch (sparse)"
    assert labels()["plain-bf16"] == "plain PyTorch (sparse), bf16 autocast"
    libraries = ("featmux", "plain", "featmux-dense-adam", "deepctr")
    for bf16 in (True, False):
        config = SpeedConfig(out_dir=tmp_path, work_dir=tmp_path, bf16=bf16, libraries=libraries)
        specs = _training_specs(config)
        tags = [tag for tag, _ in specs]
        for name in ("featmux", "plain", "deepctr"):  # 2 datasets x 2 models each
            assert sum(t.endswith(f"-{name}-bf16") for t in tags) == (4 if bf16 else 0)
        # each bf16 run right after its float32 run
        for i, tag in enumerate(tags):
            if tag.endswith("-bf16"):
                assert tags[i - 1] == tag.removesuffix("-bf16") and specs[i][1]["bf16"] is True
        # dense Adam on the 5.37M synthetic rows would touch every row per step: Frappe only
        dense = [t for t in tags if "dense-adam" in t]
        assert dense and all(t.startswith("frappe-") for t in dense)
        assert len(dense) == (4 if bf16 else 2)
