"""The contenders of the training part: one module each, found here by name.

A contender module defines `CONTENDERS`, a tuple of `Contender`: its name (the `--library` value), the
label in the tables, and `run(spec) -> result`, which trains as the spec says and returns the epoch
history (each record with `train_seconds`, `valid_auc`, `valid_logloss` and at the best epoch
`test_auc`); `run` is None for contenders that run in the peers' own venv (`benchmarks/speed/peers.py`).
Adding a contender is adding one module here.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featmux.atomic import write_json_atomic


@dataclass(frozen=True)
class Contender:
    """One library (or variant) the training part measures.

    Args:
        name: its key, e.g. "plain" (what `--library` takes).
        label: how the tables name it.
        run: trains from a spec dict and returns the result dict (None: runs in the peers' venv).
    """

    name: str
    label: str
    run: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def all_contenders() -> dict[str, Contender]:
    """Every contender of the modules of this package, by name, featmux first."""
    found: dict[str, Contender] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "featmux", m.name)):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for contender in getattr(module, "CONTENDERS", ()):
            found[contender.name] = contender
    return found


def run_contender(spec_path: Path, result_path: Path) -> None:
    """Entry of an in-process contender's process: train as `spec` says, write the result JSON."""
    import json

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    load = os.getloadavg()
    runner = all_contenders()[spec["library"]].run
    if runner is None:
        raise ValueError(f"contender {spec['library']!r} runs in the peers' venv, not here")
    result = runner(spec)
    result.update(
        {
            "threads": torch.get_num_threads(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "loadavg_start": load,
            "loadavg_end": os.getloadavg(),
            "versions": {"torch": torch.__version__},
        }
    )
    write_json_atomic(result_path, result)


def labels() -> dict[str, str]:
    """Contender name -> its label in the tables."""
    return {c.name: c.label for c in all_contenders().values()}


def peer_names() -> tuple[str, ...]:
    """The contenders that run in the peers' venv (the "best peer" of the ratios is one of them)."""
    return tuple(n for n, c in all_contenders().items() if c.run is None)
