"""Feature schema: what each column of a dataset is and how its raw values are fingerprinted.

Notation used across featmux docstrings:
    B: batch size        F: categorical features     S: embedding slots (sum of chunks over features)
    D: dim of one slot   L: values in one bag        T: sub-tables of a shared table
    K: chunks (probes) of one feature                N: numeric (dense) features
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, unique

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@unique
class ValueEncoding(Enum):
    """How a raw categorical value becomes a 64-bit fingerprint (see `featmux.hashing.fingerprint`)."""

    STRING = "string"  # xxh3-64 of the UTF-8 bytes
    INT = "int"  # the integer itself (int64)
    HEX = "hex"  # the value parsed as a hexadecimal integer (Criteo/Avazu ids are 32-bit hex)


@unique
class NumericTransform(Enum):
    """Transform applied to a numeric column before it enters the model."""

    NONE = "none"
    LOG1P = "log1p"  # sign(x) * log(1 + |x|): tames heavy-tailed counts such as Criteo's I1..I13


@unique
class Pooling(Enum):
    """How the vectors of a multivalent feature's values are pooled into one."""

    MEAN = "mean"
    SUM = "sum"


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r} must be non-empty and use letters, digits, '_', '.', '-'")


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical column.

    Args:
        name: column name; it also derives the feature's hash salts, so renaming a feature rehashes it.
        encoding: how raw values are fingerprinted.
        multivalent: True for a bag of values per row (e.g. genres); pooled with `pooling`.
        separator: separator between the values of a multivalent cell in text files.
        pooling: combiner for multivalent features.
        share_with: another feature whose embedding rows this one reads (its vocabulary in the
            collisionless table, its rows and salt in hashing, its salts in Unified Embedding): a value
            gets the same vectors in both features, and the rows are stored and budgeted once. E.g. a
            history of items sharing the target item's rows. None: rows of its own.

    Example:
        >>> CategoricalFeature("genres", multivalent=True, separator="|")
        >>> CategoricalFeature("hist_item_id", ValueEncoding.INT, multivalent=True, share_with="item_id")
    """

    name: str
    encoding: ValueEncoding = ValueEncoding.STRING
    multivalent: bool = False
    separator: str = "|"
    pooling: Pooling = Pooling.MEAN
    share_with: str | None = None

    def __post_init__(self) -> None:
        _check_name("categorical feature", self.name)
        if self.multivalent and not self.separator:
            raise ValueError(f"multivalent feature {self.name!r} needs a non-empty separator")
        if self.share_with == self.name:
            raise ValueError(f"feature {self.name!r} cannot share rows with itself")

    @property
    def row_owner(self) -> str:
        """The feature whose embedding rows this one reads: `share_with`, or its own name."""
        return self.share_with or self.name


def row_owners(features: Sequence[CategoricalFeature]) -> tuple[CategoricalFeature, ...]:
    """The features that own embedding rows (no `share_with`): what tables and budgets count once."""
    return tuple(f for f in features if f.share_with is None)


def check_shares(features: Sequence[CategoricalFeature]) -> None:
    """Every `share_with` must name another feature of `features` that owns its rows, same encoding.

    Raises:
        ValueError: naming the feature and what is wrong.
    """
    by_name = {f.name: f for f in features}
    for f in features:
        if f.share_with is None:
            continue
        owner = by_name.get(f.share_with)
        if owner is None:
            raise ValueError(
                f"feature {f.name!r} shares the rows of {f.share_with!r}, which is not among the features "
                f"{list(by_name)}"
            )
        if owner.share_with is not None:
            raise ValueError(
                f"feature {f.name!r} shares the rows of {owner.name!r}, which itself shares those of "
                f"{owner.share_with!r}: share with {owner.share_with!r} directly"
            )
        if owner.encoding is not f.encoding:
            raise ValueError(
                f"feature {f.name!r} ({f.encoding.value}) cannot share the rows of {owner.name!r} "
                f"({owner.encoding.value}): the same value would have different fingerprints"
            )


@dataclass(frozen=True)
class NumericFeature:
    """A numeric column; missing values become 0 after the transform.

    Args:
        name: column name.
        transform: transform applied before the model sees the value.
    """

    name: str
    transform: NumericTransform = NumericTransform.NONE

    def __post_init__(self) -> None:
        _check_name("numeric feature", self.name)


@dataclass(frozen=True)
class Schema:
    """The columns of a CTR dataset: one binary label, categorical and numeric features.

    Args:
        label: name of the 0/1 label column.
        categorical: categorical features, univalent and multivalent.
        numeric: numeric features.

    Example:
        >>> Schema("click", categorical=(CategoricalFeature("ad_id"),), numeric=(NumericFeature("price"),))
    """

    label: str
    categorical: tuple[CategoricalFeature, ...]
    numeric: tuple[NumericFeature, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        if not self.categorical:
            raise ValueError("a schema needs at least one categorical feature")
        names = [self.label, *(f.name for f in self.categorical), *(f.name for f in self.numeric)]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"column {name!r} appears twice in the schema")
            seen.add(name)
        check_shares(self.categorical)

    @property
    def univalent(self) -> tuple[CategoricalFeature, ...]:
        """Univalent categorical features, in the column order of `SparseFeatures.ids`."""
        return tuple(f for f in self.categorical if not f.multivalent)

    @property
    def multivalent(self) -> tuple[CategoricalFeature, ...]:
        """Multivalent categorical features, in the order of `SparseFeatures.bags`."""
        return tuple(f for f in self.categorical if f.multivalent)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.categorical)

    def feature(self, name: str) -> CategoricalFeature:
        for f in self.categorical:
            if f.name == name:
                return f
        raise KeyError(f"no categorical feature {name!r}; the schema has {list(self.feature_names)}")

    def select(self, names: Sequence[str]) -> Schema:
        """The same schema restricted to the named categorical features (numeric ones kept)."""
        unknown = sorted(set(names) - set(self.feature_names))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; the schema has {list(self.feature_names)}")
        keep = set(names)
        return Schema(self.label, tuple(f for f in self.categorical if f.name in keep), self.numeric)

    def with_shares(self, shares: Mapping[str, str]) -> Schema:
        """The same schema with `share_with` set: feature name -> the feature whose rows it reads.

        Raises:
            ValueError: an unknown feature, or a share `check_shares` refuses.
        """
        unknown = sorted(set(shares) - set(self.feature_names))
        if unknown:
            raise ValueError(
                f"share_with names unknown feature(s) {unknown}; the schema has {list(self.feature_names)}"
            )
        cats = tuple(
            replace(f, share_with=shares[f.name]) if f.name in shares else f for f in self.categorical
        )
        return Schema(self.label, cats, self.numeric)

    def to_dict(self) -> dict:
        """A JSON-able description; `Schema.from_dict` rebuilds it (stored in checkpoints)."""
        return {
            "label": self.label,
            "categorical": [
                {
                    "name": f.name,
                    "encoding": f.encoding.value,
                    "multivalent": f.multivalent,
                    "separator": f.separator,
                    "pooling": f.pooling.value,
                    # only when set: schemas (and the cache keys made from them) without sharing are unchanged
                    **({"share_with": f.share_with} if f.share_with is not None else {}),
                }
                for f in self.categorical
            ],
            "numeric": [{"name": f.name, "transform": f.transform.value} for f in self.numeric],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        cats = tuple(
            CategoricalFeature(
                name=c["name"],
                encoding=ValueEncoding(c.get("encoding", "string")),
                multivalent=bool(c.get("multivalent", False)),
                separator=c.get("separator", "|"),
                pooling=Pooling(c.get("pooling", "mean")),
                share_with=c.get("share_with"),
            )
            for c in data["categorical"]
        )
        nums = tuple(
            NumericFeature(n["name"], NumericTransform(n.get("transform", "none")))
            for n in data.get("numeric", [])
        )
        return cls(data["label"], cats, nums)
