"""Where and how the numbers are measured: the machine's description, the GEMM peak, the measurement lock."""

from __future__ import annotations

import fcntl
import math
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from featmux.training.precision import Bf16Choice, cpu_flags


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_peak_gflops(
    threads: int, size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """Best GFLOP/s of a square `size` matmul in `dtype` on `threads` threads: the peak we compare to."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(a, b)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        return 2 * size**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def machine(threads: int, bf16: Bf16Choice) -> dict[str, Any]:
    """Where the numbers were measured: CPU, cores, torch, threads, flags, memory, load, bf16 choice."""
    mem = None
    try:
        found = [ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")]
        mem = int(found[0].split()[1]) * 1024 if found else None
    except OSError:
        pass
    return {
        "cpu": _cpu_model(),
        "cpu_flags": list(cpu_flags()),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
        **bf16.as_dict(),
    }


@contextmanager
def measurement_lock(path: Path | None) -> Iterator[float]:
    """Hold the measurement lock (exclusive flock) for a timing run; yields the seconds waited for it."""
    if path is None:
        yield 0.0
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
