"""Errors for bad input, and the policy for bad rows (stop with a clear message, or skip and count)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum, unique
from pathlib import Path


class DataError(ValueError):
    """Malformed input, located: `file:line: field: what is wrong`.

    Args:
        path: the file.
        line: 1-based line number in the file (None when unknown, e.g. Parquet).
        field: the column name or 1-based field position (None for a whole-line problem).
        message: what is wrong, and what was expected.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path + (f":{line}" if line is not None else "")
        what = f"field {field!r}: " if field is not None else ""
        super().__init__(f"{where}: {what}{message}")


@unique
class BadRowPolicy(Enum):
    RAISE = "raise"  # stop at the first bad row with a DataError
    SKIP = "skip"  # drop bad rows, count them per reason, report at the end


@dataclass
class BadRows:
    """Where bad rows go: `policy` decides; skipped rows are counted by reason (first example kept).

    Example:
        >>> bad = BadRows(BadRowPolicy.SKIP)
        >>> ...  # read with it
        >>> print(bad.summary())
    """

    policy: BadRowPolicy = BadRowPolicy.RAISE
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @classmethod
    def skipping(cls, skip: bool) -> BadRows:
        """The policy of a `skip_bad_rows` flag: skip and count (True), or stop at the first (False)."""
        return cls(BadRowPolicy.SKIP if skip else BadRowPolicy.RAISE)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def copy(self) -> BadRows:
        """An independent snapshot (for `since`)."""
        return BadRows(self.policy, Counter(self.counts), dict(self.examples))

    def since(self, earlier: BadRows) -> BadRows:
        """The rows skipped after the snapshot `earlier` was taken (e.g. by one split's pass)."""
        counts = self.counts - earlier.counts
        return BadRows(self.policy, counts, {r: e for r, e in self.examples.items() if r in counts})

    def handle(self, error: DataError, count: int = 1) -> None:
        """Raise `error`, or count `count` rows skipped for its reason."""
        if self.policy is BadRowPolicy.RAISE:
            raise error
        reason = f"{error.field}: {error.message}" if error.field is not None else error.message
        self.counts[reason] += count
        self.examples.setdefault(reason, str(error))

    def summary(self) -> str:
        if not self.counts:
            return "no bad rows"
        lines = [f"skipped {self.skipped} bad row(s):"]
        lines += [
            f"  {n} x {reason} (first: {self.examples[reason]})" for reason, n in self.counts.most_common()
        ]
        return "\n".join(lines)
