"""Summaries, ratios and the Markdown report of a speed run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from featmux.benchmarks.speed.contenders import BF16_SUFFIX, labels, optimizer_of, peer_names


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
            row: dict[str, Any] = {
                "dataset": dataset,
                "model": model,
                "contender": m["contender"],
                "bf16": bool(m.get("bf16", False)),
                "optimizer": optimizer_of(m["contender"]),
            }
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
            if m.get("autocast_check") is not None:
                row["autocast_check"] = m["autocast_check"]
            if m.get("dense_flops_per_sample"):
                row["dense_flops_per_sample"] = m["dense_flops_per_sample"]
                row["achieved_gflops"] = m["dense_flops_per_sample"] * row["samples_per_s"] / 1e9
            rows.append(row)
    return rows


AUC_TOLERANCE = 0.002
"""Two runs count as equal in test AUC when they differ by at most this (the issue's criterion)."""
FASTER_PEER = "faster peer"
"""Stands for the faster (samples/s) of the peers' float32 runs of a workload in `COMPARISONS`."""
FASTER_PEER_BF16 = "faster peer bf16"
"""The faster of the peers' bf16 autocast runs."""

COMPARISONS: tuple[tuple[str, str, bool], ...] = (
    ("featmux", "plain", True),
    ("featmux-bf16", "plain", True),
    ("featmux-bf16", "plain-bf16", True),
    ("featmux", FASTER_PEER, True),
    ("featmux-bf16", FASTER_PEER_BF16, True),
    ("featmux-dense-adam", FASTER_PEER, True),
    ("featmux-dense-adam-bf16", FASTER_PEER_BF16, True),
    ("featmux-bf16", FASTER_PEER, False),
    ("featmux-bf16", "featmux", False),
    ("plain-bf16", "plain", False),
)
"""(numerator, denominator, headline) of every ratio the report computes, where both ran; the headline
ones are the issue's targets (featmux against both plain baselines and the faster peer, each precision,
and the same-optimizer ratio)."""


def _faster(rows: dict[str, dict[str, Any]], bf16: bool) -> dict[str, Any] | None:
    suffix = BF16_SUFFIX if bf16 else ""
    peers = [rows[p + suffix] for p in peer_names() if p + suffix in rows]
    return max(peers, key=lambda r: r["samples_per_s"]) if peers else None


def ratios(training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ratio of `COMPARISONS` per workload: speed-ups, both test AUCs and optimizers, the AUC check.

    Each entry: dataset, model, numerator, denominator (contender names; a "faster peer" resolved to
    the peer), headline, speedup (samples/s ratio), time_to_auc_speedup (where both reached the
    workload's common validation AUC), both test AUCs, auc_delta (numerator minus denominator),
    equal_auc (|auc_delta| <= `AUC_TOLERANCE`) and both optimizers.
    """
    out = []
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in training}):
        rows = {
            r["contender"]: r
            for r in training
            if (r["dataset"], r["model"]) == (dataset, model) and "error" not in r
        }
        rows_with_peers = {**rows}
        for key, bf16 in ((FASTER_PEER, False), (FASTER_PEER_BF16, True)):
            peer = _faster(rows, bf16)
            if peer is not None:
                rows_with_peers[key] = peer
        for top, bottom, headline in COMPARISONS:
            a, b = rows_with_peers.get(top), rows_with_peers.get(bottom)
            if a is None or b is None:
                continue
            delta = a["test_auc"] - b["test_auc"]
            entry: dict[str, Any] = {
                "dataset": dataset,
                "model": model,
                "numerator": a["contender"],
                "denominator": b["contender"],
                "headline": headline,
                "speedup": a["samples_per_s"] / b["samples_per_s"],
                "numerator_samples_per_s": a["samples_per_s"],
                "denominator_samples_per_s": b["samples_per_s"],
                "numerator_test_auc": a["test_auc"],
                "denominator_test_auc": b["test_auc"],
                "auc_delta": delta,
                "equal_auc": bool(abs(delta) <= AUC_TOLERANCE),
                "numerator_optimizer": a["optimizer"],
                "denominator_optimizer": b["optimizer"],
            }
            if a.get("seconds_to_target") and b.get("seconds_to_target"):
                entry["time_to_auc_speedup"] = b["seconds_to_target"] / a["seconds_to_target"]
            out.append(entry)
    return out


def flop_rates(training: list[dict[str, Any]], peak: float, peak_bf16: float) -> list[dict[str, Any]]:
    """featmux's (and plain's) dense GFLOP/s per run as fractions of the measured fp32 and bf16 GEMM peaks.

    Args:
        training: `summarise_training` rows.
        peak: the run's float32 GEMM peak, GFLOP/s.
        peak_bf16: its bf16 GEMM peak, GFLOP/s.
    """
    return [
        {
            "dataset": r["dataset"],
            "model": r["model"],
            "contender": r["contender"],
            "bf16": r["bf16"],
            "achieved_gflops": r["achieved_gflops"],
            "of_fp32_peak": r["achieved_gflops"] / peak,
            "of_bf16_peak": r["achieved_gflops"] / peak_bf16,
        }
        for r in training
        if "achieved_gflops" in r
    ]


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _label(contender: str) -> str:
    return labels().get(contender, contender)


def _ratio_rows(ratios: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in ratios:
        equal = "yes" if r["equal_auc"] else "**no**"
        bold = "**" if r["headline"] else ""
        rows.append(
            [
                r["dataset"],
                r["model"],
                f"{_label(r['numerator'])} ({r['numerator_optimizer']})",
                f"{_label(r['denominator'])} ({r['denominator_optimizer']})",
                f"{_fmt(r['numerator_samples_per_s'])} / {_fmt(r['denominator_samples_per_s'])}",
                f"{bold}{_fmt(r['speedup'], '.2f')}x{bold}",
                _fmt(r.get("time_to_auc_speedup"), ".2f") + "x",
                f"{r['numerator_test_auc']:.4f} / {r['denominator_test_auc']:.4f}",
                f"{r['auc_delta']:+.4f}: {equal}",
            ]
        )
    return rows


def _autocast_lines(training: list[dict[str, Any]]) -> list[str]:
    """Per peer bf16 run: the share of its training-time nn.Linear outputs in bf16 (did autocast hold?)."""
    lines = []
    for r in training:
        check = r.get("autocast_check")
        if not check or not r["bf16"]:
            continue
        outputs = check["linear_outputs"]
        total = sum(outputs.values())
        share = outputs.get("bfloat16", 0) / total if total else float("nan")
        lines.append(
            f"- {r['dataset']} {r['model']} {_label(r['contender'])}: {_fmt(100 * share, '.1f')}% of "
            f"{total:,} nn.Linear outputs in bf16, {check['other_threads']} off the calling thread."
        )
    return lines


def _headline(ratios: list[dict[str, Any]]) -> list[str]:
    """Per workload, the headline ratios, each naming both sides' optimizers and the AUC check."""
    lines = []
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in ratios}):
        mine = [r for r in ratios if (r["dataset"], r["model"]) == (dataset, model) and r["headline"]]
        if not mine:
            continue
        lines.append(f"- **{dataset} {model}**")
        lines += [
            f"  - {_label(r['numerator'])} / {_label(r['denominator'])}: **{r['speedup']:.2f}x** "
            f"({r['numerator_optimizer']} vs {r['denominator_optimizer']}); test AUC {r['auc_delta']:+.4f}: "
            f"{'equal' if r['equal_auc'] else 'NOT equal'} within {AUC_TOLERANCE}"
            for r in mine
        ]
    return lines


def _training_rows(training: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in training:
        name = _label(r["contender"])
        if "error" in r:
            error = "error: " + r["error"][-100:].replace("|", "/")
            rows.append([r["dataset"], r["model"], name, r.get("optimizer", ""), error] + [""] * 6)
            continue
        rows.append(
            [
                r["dataset"],
                r["model"],
                name,
                r["optimizer"],
                _fmt(r["samples_per_s"]),
                str(r["epochs"]),
                _fmt(r["best_valid_auc"], ".4f"),
                _fmt(r["test_auc"], ".4f"),
                f"{_fmt(r['seconds_to_target'], '.1f')} (>= {_fmt(r['target_valid_auc'], '.4f')})",
                _fmt((r["peak_rss_bytes"] or 0) / 2**20),
                f"{r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}",
            ]
        )
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what `featmux bench speed` prints and saves)."""
    m = report["machine"]
    peak = report.get("gemm_peak_gflops") or float("nan")
    peak_bf16 = report.get("gemm_peak_gflops_bf16") or float("nan")
    lock = report.get("config", {}).get("lock")
    under_lock = f", under the measurement lock {lock}" if lock else ""
    lines = [
        f"# featmux speed, {report['created']}",
        "",
        f"Machine: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores, torch {m['torch']}, "
        f"{m['threads']} threads, load average at start {m['loadavg'][0]:.2f}. FP32 GEMM peak measured: "
        f"{_fmt(peak, '.0f')} GFLOP/s, bf16 {_fmt(report.get('gemm_peak_gflops_bf16'), '.0f')} GFLOP/s "
        f"(2048^3 matmul, {m['threads']} threads). bf16 autocast runs: {m.get('bf16', False)} "
        f"({m.get('bf16_reason', 'not recorded')}). Contenders ran one after another, each alone in its "
        f"process{under_lock}.",
        "",
    ]
    if report.get("ratios"):
        header = ["dataset", "model", "contender (optimizer)", "against (optimizer)", "samples/s"]
        header += ["speedup", "time-to-AUC speedup", "test AUC", f"ΔAUC: equal within {AUC_TOLERANCE}?"]
        lines += [
            "## Headline",
            "",
            *_headline(report["ratios"]),
            "",
            "## Ratios (one run; the headline ones in bold)",
            "",
            f'A "faster peer" is the faster of {", ".join(_label(p) for p in peer_names())} in the same '
            "precision. bf16 runs train under bf16 autocast and evaluate in float32. The optimizer named is "
            "the tables'; every dense layer trains with Adam. Row-wise lazy Adam and SparseAdam make the "
            "same lazy update, moving only the rows a batch reads; dense Adam moves every row at every step.",
            "",
            *_table(header, _ratio_rows(report["ratios"])),
            "",
        ]
    if report.get("training"):
        rates = flop_rates(report["training"], peak, peak_bf16)
        if rates:
            rows = [
                [r["dataset"], r["model"], _label(r["contender"]), f"{r['achieved_gflops']:.0f}",
                 f"{100 * r['of_fp32_peak']:.0f}%", f"{100 * r['of_bf16_peak']:.0f}%"]
                for r in rates
            ]  # fmt: skip
            lines += [
                f"## Dense FLOP rate against the measured GEMM peaks (fp32 {_fmt(peak, '.0f')}, bf16 "
                f"{_fmt(peak_bf16, '.0f')} GFLOP/s)",
                "",
                "Dense FLOPs per sample: 6 x in x out over the linear layers (forward and both backward "
                "matmuls), times samples/s; elementwise work and the embeddings are not counted.",
                "",
                *_table(
                    ["dataset", "model", "contender", "dense GFLOP/s", "of fp32 peak", "of bf16 peak"], rows
                ),
                "",
            ]
    if report.get("training"):
        header = ["dataset", "model", "contender", "optimizer", "samples/s", "epochs", "best valid AUC"]
        header += ["test AUC", "s to valid AUC target", "peak RSS MiB", "load start/end"]
        lines += [
            "## Training runs",
            "",
            "Every contender trains the same fixed number of epochs (a cap, no early stopping: not "
            "converged); test AUC at its best validation epoch.",
            "",
            *_table(header, _training_rows(report["training"])),
            "",
        ]
        checks = _autocast_lines(report["training"])
        if checks:
            lines += ["Peers' training under autocast (forward hooks on every nn.Linear):", "", *checks, ""]
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
