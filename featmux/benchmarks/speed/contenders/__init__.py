"""The contenders of the training part: one module each, found here by name.

A contender module defines `CONTENDERS`, a tuple of `Contender`: its name (the `--library` value), the
label in the tables, the optimizer it trains with, and `run(spec) -> result`, which trains as the spec
says and returns the epoch history (each record with `train_seconds`, `valid_auc`, `valid_logloss` and
at the best epoch `test_auc`); `run` is None for contenders that run in the peers' own venv
(`benchmarks/speed/peers.py`). A contender with `bf16=True` also runs a second time under bf16 autocast
(spec `"bf16": true`, reported as `<name>-bf16`) wherever bf16 is resolved on. Adding a contender is
adding one module here.
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

DENSE_ADAM = "dense Adam"
"""The optimizer of DeepCTR-Torch, torch-rechub and `featmux-dense-adam`: Adam over every parameter."""
BF16_SUFFIX = "-bf16"
"""How the bf16 autocast run of a contender is named: `featmux-bf16`, `plain-bf16`, ..."""


@dataclass(frozen=True)
class Contender:
    """One library (or variant) the training part measures.

    Args:
        name: its key, e.g. "plain" (what `--library` takes).
        label: how the tables name it.
        run: trains from a spec dict and returns the result dict (None: runs in the peers' venv).
        optimizer: what updates its tables (the headline states it per ratio; dense layers: Adam).
        bf16: also run it under bf16 autocast, right after its float32 run, where bf16 is resolved on.
        datasets: the workloads it runs on (None: every one).
    """

    name: str
    label: str
    run: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    optimizer: str = ""
    bf16: bool = False
    datasets: tuple[str, ...] | None = None


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


def split_variant(contender: str) -> tuple[Contender, bool]:
    """(the Contender, is it the bf16 autocast run) of a reported contender name such as `plain-bf16`.

    Args:
        contender: a contender name, with or without `BF16_SUFFIX`.

    Raises:
        KeyError: no such contender.
    """
    found = all_contenders()
    if contender not in found and contender.endswith(BF16_SUFFIX):
        return found[contender.removesuffix(BF16_SUFFIX)], True
    return found[contender], False


def labels() -> dict[str, str]:
    """Contender name (bf16 runs included, e.g. `plain-bf16`) -> its label in the tables."""
    out = {}
    for c in all_contenders().values():
        out[c.name] = c.label
        if c.bf16:
            out[c.name + BF16_SUFFIX] = f"{c.label}, bf16 autocast"
    return out


def optimizer_of(contender: str) -> str:
    """The optimizer a reported contender (bf16 runs included) trained with ("?" if unknown)."""
    try:
        return split_variant(contender)[0].optimizer or "?"
    except KeyError:
        return "?"


def peer_names() -> tuple[str, ...]:
    """The contenders that run in the peers' venv (the "faster peer" of the ratios is one of them)."""
    return tuple(n for n, c in all_contenders().items() if c.run is None)
