"""Embedding budgets: every method is given the same memory (or the same number of parameters).

A budget is stated as a fraction of the fp32 collisionless table's bytes (`1/16`), as bytes
(`bytes:4000000`), as rows of width D (`rows:100000`) or as parameters (`params:1600000`).
`Budget.target` resolves it to one number that a method's `solve` must not exceed: bytes of
`memory_bytes()` (fractions and `bytes:`) or parameters of `num_parameters()` (`rows:`, `params:`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from featmux.embeddings.registry import BudgetTarget, BudgetUnit

FP32_BYTES = 4
"""Bytes of one stored float32 value: the collisionless reference table stores D of them per row."""


@dataclass(frozen=True)
class Budget:
    """An embedding budget; exactly one field is set.

    Args:
        fraction: share of the fp32 collisionless table's bytes (> 0; may exceed 1).
        rows: rows of width `embedding_dim` (a parameter budget).
        params: parameters (floats) in embedding tables.
        bytes: bytes of everything the layer stores (`memory_bytes()`).

    Example:
        >>> Budget.parse("1/16").target(collisionless_parameters=1_000_000, embedding_dim=10)
        BudgetTarget(amount=250000, unit=<BudgetUnit.BYTES: 'bytes'>)
    """

    fraction: float | None = None
    rows: int | None = None
    params: int | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.fraction, self.rows, self.params, self.bytes) if v is not None]
        if len(given) != 1:
            raise ValueError("a Budget takes exactly one of fraction, rows, params, bytes")
        if given[0] <= 0:
            raise ValueError(f"budget must be positive, got {given[0]}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """`1/16`, `0.25`, `bytes:4000000`, `rows:100000` or `params:1600000`."""
        raw = text.strip().lower().replace("_", "")
        try:
            if raw.startswith("rows:"):
                return cls(rows=int(raw[5:]))
            if raw.startswith("params:"):
                return cls(params=int(raw[7:]))
            if raw.startswith("bytes:"):
                return cls(bytes=int(raw[6:]))
            return cls(fraction=float(Fraction(raw)))
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(
                f"cannot read budget {text!r}: use a fraction of the collisionless size "
                "such as 1/16 or 0.25, or bytes:N, rows:N, or params:N (N > 0)"
            ) from err

    def target(self, collisionless_parameters: int | None, embedding_dim: int) -> BudgetTarget:
        """The budget as bytes or parameters. A fraction needs the collisionless count (a vocabulary).

        Args:
            collisionless_parameters: (|V_f| + 1) * D summed over features (None: unknown).
            embedding_dim: D.
        """
        if self.params is not None:
            return BudgetTarget(self.params, BudgetUnit.PARAMS)
        if self.rows is not None:
            return BudgetTarget(self.rows * embedding_dim, BudgetUnit.PARAMS)
        if self.bytes is not None:
            return BudgetTarget(self.bytes, BudgetUnit.BYTES)
        if collisionless_parameters is None:
            raise ValueError(
                "a fractional budget needs the collisionless parameter count (fit a vocabulary first)"
            )
        return BudgetTarget(max(1, round(self.fraction * collisionless_parameters * FP32_BYTES)))

    def __str__(self) -> str:
        if self.fraction is not None:
            frac = Fraction(self.fraction).limit_denominator(4096)
            return str(frac) if abs(float(frac) - self.fraction) < 1e-12 else repr(self.fraction)
        if self.rows is not None:
            return f"rows:{self.rows}"
        return f"params:{self.params}" if self.params is not None else f"bytes:{self.bytes}"


def collisionless_rows(cardinalities: Mapping[str, int]) -> int:
    """Rows of the collisionless layer: each feature's vocabulary plus one out-of-vocabulary row."""
    return sum(c + 1 for c in cardinalities.values())


def split_rows(total: int, caps: Sequence[int], weights: Sequence[float] | None = None) -> list[int]:
    """Split `total` rows across features in proportion to `caps` (their cardinalities), at least 1 each.

    A proportional share never exceeds its cap while total < sum(caps), and from there on every feature
    simply gets its cap. Rounding is by largest remainder, so the sum is exactly min(total, sum(caps))
    (or len(caps) when total is smaller than that). With `weights` (> 0), shares follow the weights
    instead, and a feature whose share would pass its cap gets the cap, the rest going to the others.
    """
    if any(c < 1 for c in caps):
        raise ValueError(f"every cap must be >= 1, got {list(caps)}")
    n = len(caps)
    if total <= n:
        return [1] * n
    weight = sum(caps)
    if total >= weight:
        return list(caps)
    if weights is not None:
        return _round_shares(total, caps, _water_fill(total, caps, weights))
    return _round_shares(total, caps, [total * c / weight for c in caps])


def _water_fill(total: int, caps: Sequence[int], weights: Sequence[float]) -> list[float]:
    """Real shares of `total` in proportion to `weights`, none above its cap (capped ones fixed first)."""
    if len(weights) != len(caps) or any(w <= 0 for w in weights):
        raise ValueError(f"weights must be > 0, one per cap, got {list(weights)}")
    shares = [0.0] * len(caps)
    free, remaining = set(range(len(caps))), float(total)
    while free:  # at most one pass per feature
        mass = sum(weights[i] for i in free)
        over = [i for i in free if remaining * weights[i] / mass >= caps[i]]
        if not over:
            break
        for i in over:
            shares[i] = float(caps[i])
            remaining -= caps[i]
            free.discard(i)
    for i in free:
        shares[i] = remaining * weights[i] / mass
    return shares


def _round_shares(total: int, caps: Sequence[int], shares: Sequence[float]) -> list[int]:
    """Integer rows from real shares (summing to total): at least 1 each, by largest remainder."""
    n = len(caps)
    alloc = [max(1, int(s)) for s in shares]
    leftover = total - sum(alloc)
    by_remainder = sorted(range(n), key=lambda i: (shares[i] - int(shares[i]), -i), reverse=True)
    step = 1 if leftover > 0 else -1
    k = 0
    while leftover != 0:
        i = by_remainder[k % n]
        if (step > 0 and alloc[i] < caps[i]) or (step < 0 and alloc[i] > 1):
            alloc[i] += step
            leftover -= step
        k += 1
    return alloc
