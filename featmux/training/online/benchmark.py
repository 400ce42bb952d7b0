"""Several embedding methods over one stream, from a benchmark YAML (`run_online_benchmark`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from featmux.data.synthetic import SyntheticConfig
from featmux.embeddings import get_method
from featmux.training.experiment import environment
from featmux.training.online.avazu_stream import write_avazu_stream
from featmux.training.online.config import OnlineConfig
from featmux.training.online.loop import run_online
from featmux.training.online.report import write_online_report
from featmux.training.online.results import OnlineResult, write_json


class AvazuStreamSpec(BaseModel):
    """An Avazu-format stream to generate before the runs (see `write_avazu_stream`).

    Args:
        directory: where the hour files go (relative to the repository root).
        partitions: hours.
        partition_rows: rows per hour.
        first_hour: `YYMMDDHH`.
        synthetic: `SyntheticConfig` fields (21 cardinalities, churn, drift, seed).

    Example:
        >>> AvazuStreamSpec(directory="runs/avazu-hours", partitions=12, partition_rows=100_000)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path
    partitions: int = Field(ge=1)
    partition_rows: int = Field(ge=1)
    first_hour: str = "14102100"
    synthetic: dict[str, Any] = Field(default_factory=dict)


class OnlineArm(BaseModel):
    """One arm of an online benchmark: an embedding method with its options, under a name of its own.

    Args:
        name: names the arm's runs (checkpoint directories, report columns), e.g. `zch-lru`.
        embedding: the method.
        embedding_options: the method's options (they update the settings' `embedding_options`).

    Example:
        >>> OnlineArm(name="zch-lru", embedding="zch", embedding_options={"eviction": "lru"})
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    embedding: str
    embedding_options: dict[str, Any] = Field(default_factory=dict)


class OnlineBenchmark(BaseModel):
    """Several embedding methods over one stream (a YAML file; unknown keys are errors).

    Args:
        name: names the result files.
        description: what the benchmark shows.
        methods: embedding methods to compare: a method's name, or an `OnlineArm` (a name, the method
            and its options; e.g. zch with LFU and with LRU eviction).
        budgets: budgets of hashing and unified ("1" = the frozen collisionless size); collisionless
            has one size.
        settings: `OnlineConfig` keys shared by every run (paths relative to the repository root).
        seeds: run every (arm, budget) once per seed (the settings' `seed` replaced); empty: once, with
            the settings' seed. The report then gives each arm's mean progressive AUC over the seeds.
        avazu_stream: generate this Avazu-format stream first (then point `settings.data` at it).

    Example:
        >>> bench = OnlineBenchmark.from_yaml("benchmarks/configs/online/online_synthetic.yaml")
        >>> bench.configs(Path("runs/x"))
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    methods: list[str | OnlineArm] = Field(default_factory=lambda: ["collisionless", "hashing", "unified"])
    budgets: list[str] = Field(default_factory=lambda: ["1"])
    settings: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)
    avazu_stream: AvazuStreamSpec | None = None
    root: Path = Path(".")

    @classmethod
    def from_yaml(cls, path: str | Path) -> OnlineBenchmark:
        """Load a benchmark YAML; relative paths in it are taken from the repository root above it."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping")
        return cls(**data, root=_repo_root(Path(path)))

    @model_validator(mode="after")
    def _unique_arms(self) -> OnlineBenchmark:
        names = [arm.name for arm in self.arms()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"methods: two arms are named {twice}; give each arm its own name")
        return self

    def arms(self) -> list[OnlineArm]:
        """The methods as arms (a plain method name is an arm of that name without options)."""
        return [OnlineArm(name=m, embedding=m) if isinstance(m, str) else m for m in self.methods]

    def runs(self, work: Path) -> list[tuple[str, OnlineConfig]]:
        """(arm name, validated `OnlineConfig`) per (arm, budget, seed), checkpointing under `work`."""
        out = []
        settings = dict(self.settings)
        shared_options = settings.pop("embedding_options", None) or {}
        if settings.get("data") is not None and not Path(settings["data"]).is_absolute():
            settings["data"] = self.root / settings["data"]
        for arm in self.arms():
            budgeted = get_method(arm.embedding).budgeted
            budgets = self.budgets if budgeted else ["1"]
            for budget in budgets:
                for seed in self.seeds or [None]:
                    tag = f"{arm.name}-{budget.replace('/', '_')}" + ("" if seed is None else f"-s{seed}")
                    config = OnlineConfig(
                        **(settings if seed is None else {**settings, "seed": seed}),
                        embedding=arm.embedding,
                        embedding_options={**shared_options, **arm.embedding_options},
                        budget=budget if budgeted else None,
                        checkpoint_dir=work / self.name / tag,
                        resume=True,
                    )
                    out.append((arm.name, config))
        return out

    def configs(self, work: Path) -> list[OnlineConfig]:
        """One validated `OnlineConfig` per (arm, budget, seed), checkpointing under `work`."""
        return [config for _, config in self.runs(work)]


def _repo_root(path: Path) -> Path:
    start = path.resolve().parent
    return next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), start)


def run_online_benchmark(
    path: str | Path,
    out: str | Path,
    work: str | Path = "runs/online",
    log: Callable[[str], None] | None = None,
) -> list[OnlineResult]:
    """Run every method of a benchmark YAML over its stream; write `<name>.json`, `.md` and `.png`.

    Runs checkpoint under `work` and resume: an interrupted benchmark continues where it stopped. With
    a generated stream, under `work/stream-<digest of its spec>`: a changed spec starts fresh runs.

    Args:
        path: the benchmark YAML (see `OnlineBenchmark`).
        out: where the results go.
        work: checkpoints and generated streams (not results).
        log: progress lines.

    Returns:
        One result per (arm, budget, seed).
    """
    say = log or (lambda _m: None)
    bench = OnlineBenchmark.from_yaml(path)
    if bench.avazu_stream is not None:
        spec = bench.avazu_stream
        directory = spec.directory if spec.directory.is_absolute() else bench.root / spec.directory
        marker = directory / ".stream.json"
        wanted = spec.model_dump(mode="json")
        if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
            say(f"writing the Avazu-format stream to {directory}")
            write_avazu_stream(
                directory,
                SyntheticConfig(**spec.synthetic),
                spec.partitions,
                spec.partition_rows,
                spec.first_hour,
            )
            write_json(marker, wanted)
    work = Path(work)
    if bench.avazu_stream is not None:  # runs over another stream never resume these checkpoints
        digest = hashlib.blake2b(json.dumps(wanted, sort_keys=True).encode(), digest_size=6).hexdigest()
        work = work / f"stream-{digest}"
    results, seconds = [], []
    for arm, config in bench.runs(work):
        say(f"== {arm} budget {config.budget or '1'} seed {config.seed}")
        started = time.perf_counter()
        result = dataclasses.replace(run_online(config, log=say), label=arm)
        seconds.append(time.perf_counter() - started)
        say(f"   mean progressive AUC {result.mean_auc():.5f} ({seconds[-1]:.0f} s)")
        results.append(result)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_json = out / f"{bench.name}.json"
    write_json(
        results_json,
        {
            "benchmark": bench.model_dump(mode="json", exclude={"root"}),
            "command": f"python -m featmux.training.online {path} {out}",
            "environment": environment(),
            "results": [r.as_dict() | {"wall_seconds": t} for r, t in zip(results, seconds, strict=True)],
        },
    )
    write_online_report(results_json)
    return results
