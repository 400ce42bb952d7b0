"""Per-feature or unified layout of a hashed structure (the VLDB 2024 study's `use_multi` switch).

A method defined per feature (hash embeddings, ...) can instead keep ONE structure for all features,
salted per feature as in Unified Embedding. `blocks` says where each feature's part of a structure of
`total` rows lies: per feature, blocks split the rows in proportion to cardinality (capped at the
collisionless |V_f| + 1, as per-feature hashing does); unified, every feature reads all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum, unique

from featmux.embeddings.budget import split_rows
from featmux.embeddings.registry import parse_choice
from featmux.features import CategoricalFeature


@unique
class Layout(Enum):
    PER_FEATURE = "per_feature"
    UNIFIED = "unified"


def parse_layout(value: Layout | str) -> Layout:
    """A `Layout` from its name (ValueError listing the choices)."""
    return parse_choice(Layout, value, "layout")


def blocks(
    features: Sequence[CategoricalFeature], total: int, layout: Layout, cardinalities: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """(start, size) of each feature's rows in a structure of `total` rows.

    Raises:
        ValueError: per feature, when `total` is below one row per feature.
    """
    if layout is Layout.UNIFIED:
        return {f.name: (0, total) for f in features}
    if total < len(features):
        raise ValueError(f"{total} rows are too few for one per feature ({len(features)} features)")
    sizes = split_rows(total, [cardinalities[f.name] + 1 for f in features])
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return {f.name: (s, n) for f, s, n in zip(features, starts, sizes, strict=True)}
