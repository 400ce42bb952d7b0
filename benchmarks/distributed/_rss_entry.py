"""torchrun entry point of `bench_distributed.py cli-memory`: the featmux CLI, then this rank's peak RSS.

Writes $FEATMUX_RSS_DIR/rank<RANK>.json at exit (ru_maxrss of this process: the rank's peak resident
memory over the whole run, data preparation, model construction, sharding and training included).
"""

import atexit
import json
import os
import resource
import sys
from pathlib import Path


def _write() -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    path = Path(os.environ["FEATMUX_RSS_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
    path.write_text(json.dumps({"peak_rss_bytes": peak}))


atexit.register(_write)
from featmux.cli.main import app  # noqa: E402

sys.argv = ["featmux", *sys.argv[1:]]
app()
