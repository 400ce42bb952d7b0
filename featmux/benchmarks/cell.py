"""Run one benchmark cell in this process and write its result; the child side of `--isolate`.

    python -m featmux.benchmarks.cell CONFIG_JSON RESULT_JSON [--log LOG] [--target module:function]

CONFIG_JSON holds the cell's ExperimentConfig as JSON. The target (default
`featmux.training.experiment:run_experiment`) is called as `target(config, log)`; its result, with the
cell's wall time and peak RSS (a fresh process, so scope "cell"), is written atomically to RESULT_JSON.
A non-zero exit status means no result. The cell exits when its parent (the runner) dies.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featmux.atomic import write_json_atomic
from featmux.benchmarks.measure import DEFAULT_TARGET, measured


def load_target(spec: str) -> Callable[..., dict[str, Any]]:
    """`module:function` -> the function."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"target {spec!r} must look like module:function")
    return getattr(importlib.import_module(module), name)


def _exit_with_parent(interval: float = 2.0) -> None:
    """Exit when the process that started this cell dies (a killed runner leaves no orphan training)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--orphan-ok", action="store_true", help="keep running if the parent dies")
    args = parser.parse_args(argv)
    if not args.orphan_ok:
        _exit_with_parent()

    from featmux.training.experiment import ExperimentConfig

    config = ExperimentConfig(**json.loads(args.config.read_text()))
    target = load_target(args.target)
    log_file = args.log.open("a") if args.log is not None else None
    try:

        def log(message: str) -> None:
            if log_file is not None:
                log_file.write(message + "\n")
                log_file.flush()

        result = measured(lambda: target(config, log))
    finally:
        if log_file is not None:
            log_file.close()
    write_json_atomic(args.result, result)


if __name__ == "__main__":
    main()
