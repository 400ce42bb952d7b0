"""Feature schema: what each column of a dataset is and how its raw values are fingerprinted.

Notation used across featmux docstrings:
    B: batch size        F: categorical features     S: embedding slots (sum of chunks over features)
    D: dim of one slot   L: values in one bag        T: sub-tables of a shared table
    K: chunks (probes) of one feature                N: numeric (dense) features
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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

    Example:
        >>> CategoricalFeature("genres", multivalent=True, separator="|")
    """

    name: str
    encoding: ValueEncoding = ValueEncoding.STRING
    multivalent: bool = False
    separator: str = "|"
    pooling: Pooling = Pooling.MEAN

    def __post_init__(self) -> None:
        _check_name("categorical feature", self.name)
        if self.multivalent and not self.separator:
            raise ValueError(f"multivalent feature {self.name!r} needs a non-empty separator")


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
            )
            for c in data["categorical"]
        )
        nums = tuple(
            NumericFeature(n["name"], NumericTransform(n.get("transform", "none")))
            for n in data.get("numeric", [])
        )
        return cls(data["label"], cats, nums)
