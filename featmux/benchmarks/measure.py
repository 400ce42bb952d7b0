"""Per-cell measurements: wall time and peak resident memory.

Peak RSS: on Linux the process's high-water mark (VmHWM, which `getrusage` also reports) can be reset
by writing 5 to /proc/self/clear_refs, so even cells run one after another in one process each get
their own peak (scope "cell"). Where the reset is not possible, the value is the process's peak since
it started (scope "process"), an upper bound; run cells in subprocesses (`--isolate`) to get per-cell
peaks there too. The peak covers the whole process during the cell: interpreter, torch and data included.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "featmux.training.experiment:run_experiment"
"""The experiment function a cell runs, as `module:function` (called as `function(config, log)`)."""

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark; True if the platform allows it (Linux >= 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (since start, or since `reset_peak_rss`)."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1)) * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # bytes on macOS, KiB elsewhere


def measured(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Call `run` and add `cell_seconds`, `peak_rss_bytes` and `peak_rss_scope` to its result.

    Args:
        run: produces a JSON-able result dict.

    Example:
        >>> result = measured(lambda: run_experiment(config))
        >>> result["peak_rss_bytes"], result["peak_rss_scope"]
    """
    scope = "cell" if reset_peak_rss() else "process"
    start = time.perf_counter()
    result = dict(run())
    result["cell_seconds"] = time.perf_counter() - start
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["peak_rss_scope"] = scope
    return result
