"""Measurements behind benchmarks/distributed/SCALING.md.

    flock /tmp/featmux-measure.lock .venv/bin/python benchmarks/distributed/bench_distributed.py throughput
    flock /tmp/featmux-measure.lock .venv/bin/python benchmarks/distributed/bench_distributed.py memory
    flock /tmp/featmux-measure.lock .venv/bin/python benchmarks/distributed/bench_distributed.py cli-memory \
        --code-root . --label after     # `featmux train --distributed` under torchrun: peak RSS per rank
    .venv/bin/python benchmarks/distributed/bench_distributed.py plan       # no GPU needed: fake topologies
    .venv/bin/python benchmarks/distributed/bench_distributed.py report     # results/*.json -> markdown

Each measurement writes results/<name>.json (with the machine it ran on); `report` prints the tables
that SCALING.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FRAPPE = Path(os.environ.get("FEATMUX_DATA", HERE.parents[2] / "shared" / "data")) / "frappe"
CACHE = Path(os.environ.get("FEATMUX_CACHE", "/tmp/featmux-bench-cache"))
GIB = 1 << 30


def _machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _save(name: str, payload: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": _machine(), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {RESULTS / name}.json")


# -- throughput on Frappe ----------------------------------------------------------------------------------
BATCH = 4096
WARMUP, MEASURED = 5, 40
MODEL = {"cross_layers": 3, "hidden": [400, 400, 400]}  # BARS Frappe DCN-v2 shape


def _frappe():
    from featmux.data.prepare import prepare

    return prepare("frappe", FRAPPE, cache_root=CACHE)


def _layer(data: Any, rows: int):
    from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig

    torch.manual_seed(0)
    return UnifiedEmbedding(
        data.schema.categorical, UnifiedEmbeddingConfig(rows=rows, embedding_dim=10, num_tables=2)
    )


def _single_process(threads: int, rows: int, steps: int) -> dict[str, Any]:
    """Plain featmux (no TorchRec): sparse Adagrad on the table, Adam on the dense part."""
    from featmux.models import build_model

    torch.set_num_threads(threads)
    data = _frappe()
    layer = _layer(data, rows)
    model = build_model("dcnv2", layer, 0, MODEL)
    layer.set_sparse_gradients(True)
    opts = [
        torch.optim.Adagrad(layer.table_parameters(), lr=0.05),
        torch.optim.Adam(model.dense_parameters(), lr=1e-3),
    ]
    times = []
    for i, batch in enumerate(data.train.batches(BATCH, shuffle=True, seed=0, epoch=0)):
        if i == WARMUP + steps:
            break
        t, cpu = time.perf_counter(), time.process_time()
        for o in opts:
            o.zero_grad()
        F.binary_cross_entropy_with_logits(model(batch.sparse, batch.dense), batch.labels).backward()
        for o in opts:
            o.step()
        times.append((time.perf_counter() - t, len(batch), time.process_time() - cpu))
    seconds = sum(t for t, _, _ in times[WARMUP:])
    return {
        "cpu_ms_per_step": 1000 * sum(c for _, _, c in times[WARMUP:]) / steps,
        "samples_per_second": sum(n for _, n, _ in times[WARMUP:]) / seconds,
        "step_ms": 1000 * seconds / steps,
    }


def _distributed_worker(sharding: str, rows: int, steps: int) -> dict[str, Any]:
    """One rank: DMP over the TorchRec-backed unified table, fused Adagrad, DDP + Adam for the dense part."""
    warnings.filterwarnings("ignore")
    import torch.distributed as dist

    from featmux.distributed import (
        DistributedTrainer,
        ShardingConfig,
        TableOptimizerConfig,
        TorchRecEmbedding,
        rank_batches,
    )
    from featmux.models import build_model
    from featmux.training.config import TrainConfig

    data = _frappe()
    model = build_model("dcnv2", TorchRecEmbedding(_layer(data, rows)), 0, MODEL)
    trainer = DistributedTrainer(
        model,
        TrainConfig(batch_size=BATCH, max_grad_norm=None, progress=False),
        ShardingConfig((sharding,), optimizer=TableOptimizerConfig("adagrad", 0.05)),
        data.schema,
    )
    rank, world = dist.get_rank(), dist.get_world_size()
    parts = rank_batches(data.train, BATCH, rank, world, True, 0, 0)
    times = []
    for i, part in enumerate(parts):
        if i == WARMUP + steps:
            break
        dist.barrier()
        t, cpu = time.perf_counter(), time.process_time()
        trainer.train_step(part)
        cpu = time.process_time() - cpu  # this rank's CPU time for the step (before waiting for the others)
        dist.barrier()
        times.append((time.perf_counter() - t, cpu))
    seconds = sum(t for t, _ in times[WARMUP:])
    cpu_all = torch.tensor([sum(c for _, c in times[WARMUP:])], dtype=torch.float64)
    dist.all_reduce(cpu_all)  # CPU time of all ranks together
    return {
        "samples_per_second": steps * BATCH / seconds,
        "step_ms": 1000 * seconds / steps,
        "cpu_ms_per_step": 1000 * float(cpu_all) / steps,
    }


def throughput(repeats: int = 3, steps: int = MEASURED) -> None:
    from featmux.distributed import launch_local

    rows = 5382 * 4  # 4x Frappe's collisionless size: the embedding is not the bottleneck here
    _frappe()  # encode the cache once, outside the timings
    setups: list[tuple[str, int, Any]] = [
        (
            f"featmux single process (no TorchRec), {t} thread(s)",
            1,
            (lambda t=t: _single_process(t, rows, steps)),
        )
        for t in (1, 2)
    ]
    for world, threads, sharding in (
        (1, 1, "table_wise"),
        (1, 2, "table_wise"),
        (2, 1, "table_wise"),
        (2, 1, "column_wise"),
    ):
        setups.append(
            (
                f"TorchRec DMP, {world} process(es) x {threads} thread(s), {sharding}",
                world,
                (
                    lambda w=world, t=threads, s=sharding: launch_local(
                        _distributed_worker, w, (s, rows, steps), threads_per_rank=t
                    )[0]
                ),
            )
        )
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in setups}
    for rep in range(repeats):  # interleaved, so a burst of load elsewhere hits every setup alike
        for name, _, run in setups:
            load = os.getloadavg()[0]
            out = run()
            samples[name].append({**out, "loadavg_1min_before": load})
            print(rep, name, f"{out['samples_per_second']:,.0f}/s (load {load:.2f})", flush=True)
    runs = []
    for name, processes, _ in setups:
        rates = sorted(x["samples_per_second"] for x in samples[name])
        runs.append(
            {
                "setup": name,
                "processes": processes,
                "samples_per_second": rates[len(rates) // 2],
                "min": rates[0],
                "max": rates[-1],
                "step_ms": 1000 * BATCH / rates[len(rates) // 2],
                "cpu_ms_per_step": sorted(x["cpu_ms_per_step"] for x in samples[name])[len(rates) // 2],
                "repeats": samples[name],
            }
        )
    _save(
        "throughput",
        {
            "dataset": "frappe train (202,027 rows)",
            "batch": BATCH,
            "model": MODEL,
            "embedding": f"unified, {rows} rows x 10, T=2",
            "warmup_steps": WARMUP,
            "measured_steps": steps,
            "statistic": f"median of {repeats}",
            "runs": runs,
        },
    )


# -- memory per rank as the table grows -------------------------------------------------------------------
DIM = 16


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _memory_worker(rows: int, sharding: str, num_tables: int) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    import torch.distributed as dist

    from featmux.distributed import (
        DistributedTrainer,
        ShardingConfig,
        TableOptimizerConfig,
        TorchRecEmbedding,
        rank_batches,
        tables_on_meta,
    )
    from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig
    from featmux.models import build_model
    from featmux.training.config import TrainConfig

    data = _frappe()
    parts = rank_batches(data.train, 1024, dist.get_rank(), dist.get_world_size(), True, 0, 0)
    first = next(parts)
    before = _rss()
    with tables_on_meta():
        layer = UnifiedEmbedding(
            data.schema.categorical,
            UnifiedEmbeddingConfig(rows=rows, embedding_dim=DIM, num_tables=num_tables),
        )
    model = build_model(
        "dcnv2", TorchRecEmbedding(layer, device=torch.device("meta")), 0, {"cross_layers": 1, "hidden": [64]}
    )
    sharding_config = ShardingConfig((sharding,), optimizer=TableOptimizerConfig("rowwise_adagrad", 0.05))
    trainer = DistributedTrainer(
        model, TrainConfig(batch_size=1024, progress=False), sharding_config, data.schema
    )
    after_init = _rss()
    for _ in range(5):
        trainer.train_step(first)
    after_steps = _rss()
    local = sum(
        s.tensor.numel() * s.tensor.element_size()
        for v in trainer.dmp.state_dict().values()
        if hasattr(v, "local_shards")
        for s in v.local_shards()
    )
    rank = dist.get_rank()
    return {
        "rank": rank,
        "planner_ddr_bytes": trainer.plan_report.storage_per_rank.get("ddr", [0] * 2)[rank],
        "local_table_bytes": local,
        "rss_growth_init_bytes": after_init - before,
        "rss_growth_after_steps_bytes": after_steps - before,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "plan": trainer.plan_report.to_markdown(),
    }


def memory(sizes: list[int]) -> None:
    from featmux.distributed import launch_local

    _frappe()
    runs = []
    for rows in sizes:
        for sharding, tables in (("table_wise", 2), ("column_wise", 1)):
            out = launch_local(_memory_worker, 2, (rows, sharding, tables), timeout_s=1800)
            runs.append({"rows": rows, "sharding": sharding, "num_tables": tables, "ranks": out})
            print(
                rows,
                sharding,
                [(r["planner_ddr_bytes"] / GIB, r["rss_growth_after_steps_bytes"] / GIB) for r in out],
                flush=True,
            )
    _save("memory", {"dim": DIM, "optimizer": "rowwise_adagrad", "processes": 2, "runs": runs})


# -- `featmux train --distributed` itself: peak RSS per rank ---------------------------------------------
CLI_ROWS = 20_000_000


def cli_memory(code_root: Path, label: str, rows: int = CLI_ROWS) -> None:
    """Run the CLI under torchrun (2 gloo ranks) with the featmux code at `code_root` (e.g. a checkout
    of an older commit, for a before/after comparison) and record every rank's peak RSS."""
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="featmux-cli-memory-"))
    torchrun = Path(sys.executable).with_name("torchrun")
    args = [
        str(torchrun), "--nproc-per-node", "2", str(HERE / "_rss_entry.py"), "train", "--distributed",
        "--dataset", "synthetic", "--dataset-option", "rows=20000", "--embedding", "unified",
        "--budget", f"rows:{rows}", "--embedding-dim", str(DIM), "--num-tables", "2",
        "--sharding", "table_wise", "--model-option", "hidden=[64]", "--batch-size", "1024",
        "--max-steps", "5", "--threads", "1", "--no-progress", "--cache-dir", str(work / "cache"),
        "--out", str(work / "result.json"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(code_root).resolve()), "FEATMUX_RSS_DIR": str(work)}
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True)
    seconds = time.perf_counter() - started
    ranks = [json.loads((work / f"rank{r}.json").read_text())["peak_rss_bytes"] for r in range(2)]
    commit = subprocess.run(
        ["git", "-C", str(code_root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(label, [round(b / GIB, 2) for b in ranks], f"GiB peak RSS per rank, {seconds:.0f} s", flush=True)
    _save(
        f"cli_memory_{label}",
        {
            "label": label,
            "commit": commit,
            "rows": rows,
            "dim": DIM,
            "num_tables": 2,
            "sharding": "table_wise",
            "table_optimizer": "adagrad",
            "processes": 2,
            "command": " ".join(args[3:]),
            "peak_rss_bytes_per_rank": ranks,
            "table_bytes": rows * DIM * 4,
            "wall_seconds": seconds,
        },
    )


# -- plans for a 1-billion-row unified table on 8 and 64 GPUs ----------------------------------------------
def plan() -> None:
    from featmux.distributed import (
        ShardingConfig,
        TableOptimizerConfig,
        TorchRecEmbedding,
        make_topology,
        plan_sharding,
        tables_on_meta,
    )
    from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig
    from featmux.features import CategoricalFeature, ValueEncoding
    from featmux.models import build_model

    criteo = tuple(CategoricalFeature(f"C{i}", ValueEncoding.HEX) for i in range(1, 27))
    cases = [
        # (name, world, gpus per host, sub-tables, allowed sharding, optimizer)
        ("8 GPUs, T=1, row_wise, rowwise Adagrad", 8, 8, 1, ("row_wise",), "rowwise_adagrad"),
        (
            "8 GPUs, T=1, planner's choice (row_wise / table_row_wise), Adam",
            8,
            8,
            1,
            ("row_wise", "table_row_wise"),
            "adam",
        ),
        ("64 GPUs (8 hosts), T=1, row_wise, rowwise Adagrad", 64, 8, 1, ("row_wise",), "rowwise_adagrad"),
        (
            "64 GPUs (8 hosts), T=1, planner's choice (row_wise / table_row_wise), rowwise Adagrad",
            64,
            8,
            1,
            ("row_wise", "table_row_wise"),
            "rowwise_adagrad",
        ),
        ("64 GPUs (8 hosts), T=8 sub-tables, table_row_wise, Adam", 64, 8, 8, ("table_row_wise",), "adam"),
    ]
    out = []
    for name, world, local, tables, kinds, optimizer in cases:
        with tables_on_meta():
            layer = UnifiedEmbedding(
                criteo, UnifiedEmbeddingConfig(rows=10**9, embedding_dim=DIM, num_tables=tables)
            )
        embedding = TorchRecEmbedding(layer, device=torch.device("meta"))
        with torch.device("meta"):
            model = build_model("dcnv2", embedding, 13, {"cross_layers": 2, "hidden": [748, 748]})
        t = time.perf_counter()
        _, report = plan_sharding(
            model,
            embedding,
            ShardingConfig(kinds, optimizer=TableOptimizerConfig(optimizer)),
            make_topology(world, "cuda", local, hbm_gib=80),
            batch_size=512,
        )
        out.append(
            {
                "case": name,
                "world": world,
                "local_world": local,
                "num_tables": tables,
                "optimizer": optimizer,
                "plan_seconds": time.perf_counter() - t,
                "hbm_per_rank": list(report.storage_per_rank["hbm"]),
                "placement_version": layer.unified_config.placement,
                # which features look up each sub-table (placement by feature name: unequal counts)
                "features_per_table": _features_per_table(layer, tables),
                "markdown": report.to_markdown(),
            }
        )
        print(name, f"{out[-1]['plan_seconds']:.2f}s")
    _save(
        "plan_1b",
        {
            "rows": 10**9,
            "dim": DIM,
            "features": "26 Criteo-like categorical + 13 dense",
            "model": "DCN-v2 2 cross + [748, 748]",
            "hbm_gib": 80,
            "batch_per_rank": 512,
            "cases": out,
        },
    )


def _features_per_table(layer: Any, tables: int) -> list[list[str]]:
    """The (feature, chunk) slots of each sub-table of a unified layer, as feature names."""
    shared = layer.shared
    features = (*shared.univalent, *shared.multivalent)  # the slots' order
    names = [f.name for f in features for _ in range(shared.chunks_of(f))]
    where = list(zip(names, shared.slot_tables, strict=True))
    return [[n for n, t in where if t == table] for table in range(tables)]


# -- report -------------------------------------------------------------------------------------------------
def report() -> None:
    lines = []
    thr = json.loads((RESULTS / "throughput.json").read_text())
    lines += [
        f"### Throughput ({thr['machine']['cores']} cores, {thr['measured_at']})",
        "",
        "| setup | processes | samples/s (median) | min - max | ms/step | CPU ms/step, all processes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in thr["runs"]:
        lines.append(
            f"| {r['setup']} | {r['processes']} | {r['samples_per_second']:,.0f} | "
            f"{r['min']:,.0f} - {r['max']:,.0f} | {r['step_ms']:.1f} | {r['cpu_ms_per_step']:.1f} |"
        )
    mem = json.loads((RESULTS / "memory.json").read_text())
    lines += [
        "",
        f"### Memory per rank ({mem['measured_at']})",
        "",
        "| rows | sharding | planner estimate / rank (GiB) | local shards (GiB) | RSS growth / rank (GiB) "
        "| peak RSS / rank (GiB) |",
        "|---:|---|---|---|---|---|",
    ]
    for r in mem["runs"]:
        ranks = r["ranks"]

        def fmt(key: str, ranks: list[dict[str, Any]] = ranks) -> str:
            return " / ".join(f"{x[key] / GIB:.2f}" for x in ranks)

        lines.append(
            f"| {r['rows']:,} | {r['sharding']} (T={r['num_tables']}) | {fmt('planner_ddr_bytes')} | "
            f"{fmt('local_table_bytes')} | {fmt('rss_growth_after_steps_bytes')} | {fmt('peak_rss_bytes')} |"
        )
    plans = json.loads((RESULTS / "plan_1b.json").read_text())
    for c in plans["cases"]:
        lines += ["", f"### {c['case']} (planned in {c['plan_seconds']:.2f} s)", "", c["markdown"]]
        per_table = c.get("features_per_table") or []
        if len(per_table) > 1:
            counts = ", ".join(f"t{t}: {len(names)}" for t, names in enumerate(per_table))
            lines += ["", f"Features per sub-table (placement version {c['placement_version']}): {counts}"]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["throughput", "memory", "cli-memory", "plan", "report"])
    parser.add_argument("--code-root", default=str(HERE.parents[1]), help="cli-memory: featmux code to run")
    parser.add_argument("--label", default="after", help="cli-memory: names the result file")
    parser.add_argument("--sizes", default="1000000,10000000,30000000,100000000", help="memory: table rows")
    parser.add_argument("--repeats", type=int, default=3, help="throughput: repetitions of each setup")
    parser.add_argument("--steps", type=int, default=MEASURED, help="throughput: measured steps per run")
    args = parser.parse_args(argv)
    if args.what == "throughput":
        throughput(args.repeats, args.steps)
    elif args.what == "memory":
        memory([int(s) for s in args.sizes.split(",")])
    elif args.what == "cli-memory":
        cli_memory(Path(args.code_root), args.label)
    elif args.what == "plan":
        plan()
    else:
        report()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # workers are pickled by module name (bench_distributed)
    import bench_distributed

    bench_distributed.main()
