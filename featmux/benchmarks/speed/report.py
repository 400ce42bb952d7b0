"""Summaries, ratios and the Markdown report of a speed run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from featmux.benchmarks.speed.contenders import labels, peer_names


def summarise_training(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: samples/s, best validation epoch's test AUC, and time to the group's common valid AUC."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["model"]), []).append(run)
    rows = []
    for (dataset, model), members in groups.items():
        ok = [m for m in members if m.get("history")]
        target = min((max(h["valid_auc"] for h in m["history"]) for m in ok), default=float("nan"))
        for m in members:
            row: dict[str, Any] = {"dataset": dataset, "model": model, "contender": m["contender"]}
            if not m.get("history"):
                rows.append({**row, "error": m.get("error", "no result")})
                continue
            hist = m["history"]
            last = hist[-1]
            best = max(hist, key=lambda h: h["valid_auc"])
            reached = next((h for h in hist if h["valid_auc"] >= target), None)
            row.update(
                {
                    "samples_per_s": m["train_rows"] * len(hist) / last["train_seconds"],
                    "train_seconds": last["train_seconds"],
                    "epochs": len(hist),
                    "best_valid_auc": best["valid_auc"],
                    "valid_auc_by_epoch": [h["valid_auc"] for h in hist],
                    "test_auc": best.get("test_auc"),
                    "test_logloss": best.get("test_logloss"),
                    "target_valid_auc": target,
                    "seconds_to_target": reached["train_seconds"] if reached else None,
                    "peak_rss_bytes": m.get("peak_rss_bytes"),
                    "threads": m.get("threads"),
                    "loadavg_start": m.get("loadavg_start"),
                    "loadavg_end": m.get("loadavg_end"),
                    "parameters": m.get("parameters"),
                    "notes": m.get("notes", []),
                }
            )
            if m.get("dense_flops_per_sample"):
                row["dense_flops_per_sample"] = m["dense_flops_per_sample"]
                row["achieved_gflops"] = m["dense_flops_per_sample"] * row["samples_per_s"] / 1e9
            rows.append(row)
    return rows


def ratios(training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """featmux / best peer (and / plain baseline) per workload, with the AUCs side by side."""
    out = []
    keys = sorted({(r["dataset"], r["model"]) for r in training})
    for dataset, model in keys:
        rows = {
            r["contender"]: r
            for r in training
            if (r["dataset"], r["model"]) == (dataset, model) and "error" not in r
        }
        mine = rows.get("featmux")
        peers = [rows[p] for p in peer_names() if p in rows]
        if mine is None:
            continue
        best_peer = max(peers, key=lambda r: r["samples_per_s"]) if peers else None
        entry: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "featmux_samples_per_s": mine["samples_per_s"],
            "featmux_test_auc": mine["test_auc"],
        }
        if best_peer is not None:
            entry.update(
                {
                    "best_peer": best_peer["contender"],
                    "best_peer_samples_per_s": best_peer["samples_per_s"],
                    "best_peer_test_auc": best_peer["test_auc"],
                    "speedup_vs_best_peer": mine["samples_per_s"] / best_peer["samples_per_s"],
                    "auc_delta_vs_best_peer_test": mine["test_auc"] - max(p["test_auc"] for p in peers),
                }
            )
            fast_peer = [p for p in peers if p.get("seconds_to_target")]
            if mine.get("seconds_to_target") and fast_peer:
                entry["time_to_auc_speedup_vs_best_peer"] = (
                    min(p["seconds_to_target"] for p in fast_peer) / mine["seconds_to_target"]
                )
        if "plain" in rows:
            entry["speedup_vs_plain"] = mine["samples_per_s"] / rows["plain"]["samples_per_s"]
            entry["plain_test_auc"] = rows["plain"]["test_auc"]
        if "featmux-bf16" in rows:
            entry["bf16_speedup"] = rows["featmux-bf16"]["samples_per_s"] / mine["samples_per_s"]
            entry["bf16_test_auc"] = rows["featmux-bf16"]["test_auc"]
            bf16_epochs = rows["featmux-bf16"]["epochs"]
            entry["bf16_valid_auc"] = rows["featmux-bf16"]["valid_auc_by_epoch"][-1]
            entry["fp32_valid_auc_same_epochs"] = mine["valid_auc_by_epoch"][
                min(bf16_epochs, mine["epochs"]) - 1
            ]
        out.append(entry)
    return out


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _ratio_rows(ratios: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in ratios:
        aucs = [r["featmux_test_auc"], r.get("best_peer_test_auc"), r.get("plain_test_auc")]
        rows.append(
            [
                r["dataset"],
                r["model"],
                _fmt(r["featmux_samples_per_s"]),
                labels().get(r.get("best_peer", ""), "-"),
                _fmt(r.get("best_peer_samples_per_s")),
                _fmt(r.get("speedup_vs_best_peer"), ".2f") + "x",
                _fmt(r.get("speedup_vs_plain"), ".2f") + "x",
                _fmt(r.get("time_to_auc_speedup_vs_best_peer"), ".2f") + "x",
                " / ".join(_fmt(a, ".4f") for a in aucs),
            ]
        )
    return rows


def _training_rows(training: list[dict[str, Any]], peak: float, peak_bf16: float) -> list[list[str]]:
    rows = []
    for r in training:
        name = labels().get(r["contender"], r["contender"])
        if "error" in r:
            rows.append(
                [r["dataset"], r["model"], name, "error: " + r["error"][-100:].replace("|", "/")] + [""] * 7
            )
            continue
        flops = "-"
        if "achieved_gflops" in r:
            top = peak_bf16 if r["contender"].endswith("-bf16") else peak  # the peak of the run's precision
            flops = f"{r['achieved_gflops']:.0f} ({100 * r['achieved_gflops'] / top:.0f}%)"
        rows.append(
            [
                r["dataset"],
                r["model"],
                name,
                _fmt(r["samples_per_s"]),
                str(r["epochs"]),
                _fmt(r["best_valid_auc"], ".4f"),
                _fmt(r["test_auc"], ".4f"),
                f"{_fmt(r['seconds_to_target'], '.1f')} (>= {_fmt(r['target_valid_auc'], '.4f')})",
                _fmt((r["peak_rss_bytes"] or 0) / 2**20),
                flops,
                f"{r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}",
            ]
        )
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what `featmux bench speed` prints and saves)."""
    m = report["machine"]
    peak = report.get("gemm_peak_gflops") or float("nan")
    peak_bf16 = report.get("gemm_peak_gflops_bf16") or float("nan")
    lines = [
        f"# featmux speed, {report['created']}",
        "",
        f"Machine: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores, torch {m['torch']}, "
        f"{m['threads']} threads, load average at start {m['loadavg'][0]:.2f}. FP32 GEMM peak measured: "
        f"{_fmt(peak, '.0f')} GFLOP/s, bf16 {_fmt(report.get('gemm_peak_gflops_bf16'), '.0f')} GFLOP/s "
        f"(2048^3 matmul, {m['threads']} threads). bf16 autocast runs: {m.get('bf16', False)} "
        f"({m.get('bf16_reason', 'not recorded')}). Contenders ran one after "
        "another, each alone in its process, under the measurement lock.",
        "",
    ]
    if report.get("ratios"):
        header = ["dataset", "model", "featmux samples/s", "best peer", "peer samples/s", "speedup"]
        header += ["vs plain sparse", "time-to-AUC speedup", "test AUC featmux / peer / plain"]
        lines += ["## Ratios (featmux / best peer, one run)", ""]
        lines += [*_table(header, _ratio_rows(report["ratios"])), ""]
        bf16 = [r for r in report["ratios"] if "bf16_speedup" in r]
        for r in bf16:
            lines.append(
                f"bf16 autocast ({r['dataset']} {r['model']}): {r['bf16_speedup']:.2f}x fp32's speed, "
                f"valid AUC {r['bf16_valid_auc']:.4f} vs fp32 {r['fp32_valid_auc_same_epochs']:.4f} after "
                f"the same epochs (native bf16: {m['bf16_native']})."
            )
        lines += [""] if bf16 else []
    if report.get("training"):
        header = ["dataset", "model", "contender", "samples/s", "epochs", "best valid AUC", "test AUC"]
        header += [
            "s to valid AUC target",
            "peak RSS MiB",
            "dense GFLOP/s (% of the fp32 or bf16 GEMM peak)",
            "load start/end",
        ]
        lines += [
            "## Training runs",
            "",
            *_table(header, _training_rows(report["training"], peak, peak_bf16)),
            "",
        ]
    emb = report.get("embedding")
    if emb and emb.get("layers"):
        ok = [x for x in emb["layers"] if "rows_per_s" in x]
        ref = next((x for x in ok if x["layer"].startswith("nn.EmbeddingBag sparse")), None)
        rows = []
        for x in emb["layers"]:
            if "error" not in x:
                rel = f"{x['ms_per_step'] / ref['ms_per_step']:.2f}x" if ref else "-"
                rows.append([x["layer"], f"{x['ms_per_step']:.1f}", _fmt(x["rows_per_s"]), rel])
            else:
                rows.append([x["layer"], "error: " + x["error"][:100].replace("|", "/"), "", ""])
        lines += [
            f"## Embedding layer alone: forward + backward + update, batch {emb['batch_size']}, "
            f"{emb['fields']} fields, dim {emb['embedding_dim']}, {emb['table_rows']:,} rows "
            f"(~{emb['unique_rows_per_batch']:,.0f} distinct per batch)",
            "",
        ]
        lines += [*_table(["layer", "ms/step", "rows/s", "time vs nn.EmbeddingBag sparse"], rows), ""]
    pipe = report.get("pipeline")
    if pipe and pipe.get("formats"):
        header = ["format", "rows", "parse to tensors", "first pass (parse + fingerprint + write cache)"]
        header += ["cached epochs (shuffled batches)"]
        rows = [
            [
                x["format"],
                f"{x['rows']:,}",
                _fmt(x["parse_to_tensors_rows_per_s"]),
                _fmt(x["first_pass_rows_per_s"]),
                _fmt(x["cached_rows_per_s"]),
            ]
            for x in pipe["formats"]
        ]
        lines += ["## Data pipeline: rows/s into tensors", "", *_table(header, rows), ""]
    lines += loop_and_inference_markdown(report)
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def summarise_loop(loop: dict[str, Any]) -> dict[str, Any]:
    """Median samples/s of each loop variant over the repeats, and the ratios between them."""
    runs = [r for r in loop.get("runs", []) if "samples_per_s" in r]

    def med(what: str, bf16: bool | None = None, dropout: str = "FastDropout") -> float:
        picked = [r["samples_per_s"] for r in runs if r["what"] == what]
        if what != "data":
            picked = [
                r["samples_per_s"]
                for r in runs
                if r["what"] == what and r["bf16"] is bf16 and r["dropout"] == dropout
            ]
        return _median(picked)

    out: dict[str, Any] = {"data_samples_per_s": med("data")}
    for bf16, name in ((False, "fp32"), (True, "bf16")):
        out[f"step_{name}"] = med("step", bf16)
        out[f"step_{name}_torch_dropout"] = med("step", bf16, "nn.Dropout")
        out[f"fit_{name}"] = med("fit", bf16)
        out[f"fit_over_step_{name}"] = out[f"fit_{name}"] / out[f"step_{name}"]
        out[f"fast_dropout_speedup_{name}"] = out[f"step_{name}"] / out[f"step_{name}_torch_dropout"]
        fits = [r for r in runs if r["what"] == "fit" and r["bf16"] is bf16 and "step_seconds" in r]
        out[f"loop_share_{name}"] = _median([1 - r["step_seconds"] / r["train_seconds"] for r in fits])
    out["bf16_step_speedup"] = out["step_bf16"] / out["step_fp32"]
    out["bf16_fit_speedup"] = out["fit_bf16"] / out["fit_fp32"]
    out["bf16_step_speedup_torch_dropout"] = out["step_bf16_torch_dropout"] / out["step_fp32_torch_dropout"]
    return out


def summarise_inference(inference: dict[str, Any]) -> dict[str, Any]:
    """Median scoring samples/s and latency percentiles of float32 and bf16 over the repeats."""
    runs = inference.get("runs", [])
    out: dict[str, Any] = {}
    for bf16, name in ((False, "fp32"), (True, "bf16")):
        mine = [r for r in runs if r["bf16"] is bf16]
        for key in ("samples_per_s", "latency_p50_ms", "latency_p99_ms"):
            out[f"{key}_{name}"] = _median([r[key] for r in mine])
    if out:
        out["bf16_throughput_speedup"] = out["samples_per_s_bf16"] / out["samples_per_s_fp32"]
    return out


def loop_and_inference_markdown(report: dict[str, Any]) -> list[str]:
    """The loop and inference parts as Markdown lines (empty when neither ran)."""
    lines: list[str] = []
    loop = report.get("loop")
    if loop and loop.get("runs"):
        s = summarise_loop(loop)
        repeats = 1 + max(r["repeat"] for r in loop["runs"])
        fit_epochs = next((r["epochs"] for r in loop["runs"] if r["what"] == "fit"), "-")
        header = [
            "",
            "step, FastDropout",
            "step, nn.Dropout",
            f"Trainer.fit ({fit_epochs} epochs)",
            "fit / step",
        ]
        rows = [
            [
                name,
                _fmt(s[f"step_{name}"]),
                _fmt(s[f"step_{name}_torch_dropout"]),
                _fmt(s[f"fit_{name}"]),
                _fmt(s[f"fit_over_step_{name}"], ".2f"),
            ]
            for name in ("fp32", "bf16")
        ]
        rows.append(
            [
                "bf16 / fp32",
                _fmt(s["bf16_step_speedup"], ".2f") + "x",
                _fmt(s["bf16_step_speedup_torch_dropout"], ".2f") + "x",
                _fmt(s["bf16_fit_speedup"], ".2f") + "x",
                "",
            ]
        )
        lines += [
            f"## Training loop: Frappe BARS DCN-v2, samples/s (median of {repeats} interleaved repeats)",
            "",
            *_table(header, rows),
            "",
            f"Data path alone (shard cache to batches): {_fmt(s['data_samples_per_s'])} samples/s. Share of "
            f"fit's training time outside `train_step` (data path, bookkeeping): "
            f"{_fmt(100 * s['loop_share_fp32'], '.2f')}% fp32, "
            f"{_fmt(100 * s['loop_share_bf16'], '.2f')}% bf16.",
            "",
        ]
    inference = report.get("inference")
    if inference and inference.get("runs"):
        s = summarise_inference(inference)
        header = ["", "samples/s at batch 4096", "p50 ms at batch 1", "p99 ms at batch 1"]
        rows = [
            [name, _fmt(s[f"samples_per_s_{name}"]), _fmt(s[f"latency_p50_ms_{name}"], ".2f"),
             _fmt(s[f"latency_p99_ms_{name}"], ".2f")]
            for name in ("fp32", "bf16")
        ]  # fmt: skip
        lines += [
            f"## Inference: Frappe BARS DCN-v2 (trained {inference['train_epochs']} epoch(s)), "
            f"{inference['test_rows']:,} test rows",
            "",
            *_table(header, rows),
            "",
            f"bf16 scoring: {_fmt(s['bf16_throughput_speedup'], '.2f')}x float32's throughput; test AUC "
            f"{inference['test_auc_bf16']:.5f} (bf16) vs {inference['test_auc_fp32']:.5f} (float32).",
            "",
        ]
    return lines
