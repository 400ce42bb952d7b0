"""Atomic file writes: a reader (or a resumed run) sees the old file, no file, or the complete new one.

The new content goes to a temporary file `.<name>.<random>.tmp` in the target's directory, is fsync'ed,
then renamed over the target; a failed write removes its temporary file. A write killed outright
(SIGKILL) can leave one behind, never a damaged target.

Example:
    >>> with atomic_open("run/model.pt") as f:
    ...     torch.save(state, f)
    >>> write_json_atomic("run/result.json", {"auc": 0.81})
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A temporary file to write `path`'s new content to, renamed over `path` when the block succeeds.

    Args:
        path: the target (its directory is created if needed).
        mode: "wb" (binary) or "w" (text).

    Returns:
        A context manager giving the open temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write `data` as JSON (indent 1, a final newline; other objects as `str`) to `path` atomically."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
