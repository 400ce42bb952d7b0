"""The embedding methods by name: one registration per method module, found without a central list.

A method is one module under `featmux/embeddings/` that defines an `EmbeddingMethod` subclass and
calls `register(...)` at import. It declares, in one place:

- `name`: its CLI / config name (`--embedding NAME`, `embedding: NAME`);
- `options`: a frozen dataclass of its settings, given as `embedding_options` (unknown keys are errors);
- `solve`: (budget, vocabulary statistics, D, options) -> the layer's config, never over the budget;
- `from_config`: rebuilds the layer from that config (the plain dict a checkpoint stores).

`method_names()` and `get_method()` import every module of the package once, so adding a method
touches one new file (plus its tests) and nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, unique
from typing import Any, ClassVar, TypeVar

import torch

from featmux.embeddings.base import FeatureEmbedding
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import CategoricalFeature, row_owners


@unique
class BudgetUnit(Enum):
    BYTES = "bytes"
    PARAMS = "params"


@dataclass(frozen=True)
class BudgetTarget:
    """A budget resolved to one number: bytes (`serving_bytes()`) or parameters (`num_parameters()`).

    Args:
        amount: the most the layer may cost, in `unit`.
        unit: what is counted.

    Example:
        >>> BudgetTarget(64_000, BudgetUnit.BYTES).fits(layer)
        True
    """

    amount: int
    unit: BudgetUnit = BudgetUnit.BYTES

    def cost(self, layer: FeatureEmbedding) -> int:
        """What `layer` costs in this budget's unit."""
        return layer.serving_bytes() if self.unit is BudgetUnit.BYTES else layer.num_parameters()

    def fits(self, layer: FeatureEmbedding) -> bool:
        """Whether `layer` stays within the budget."""
        return self.cost(layer) <= self.amount

    @property
    def costs(self) -> tuple[int, int]:
        """(one stored float32, one int64 vocabulary key) in this unit: (4, 8) bytes or (1, 0) parameters."""
        return (4, 8) if self.unit is BudgetUnit.BYTES else (1, 0)

    def per_value(self, bytes_per_value: int) -> int:
        """The budget in stored values (parameters) of `bytes_per_value` bytes each, rounded down."""
        return self.amount // bytes_per_value if self.unit is BudgetUnit.BYTES else self.amount

    def __str__(self) -> str:
        return f"{self.amount:,} {self.unit.value}"


@dataclass(frozen=True)
class VocabularyStats:
    """What a method's `solve` knows of the data.

    Args:
        cardinalities: |V_f| per feature name (values seen at least `min_count` times in training), for
            the features that own rows (a feature with `share_with` reads its owner's and has none).
        vocabulary: the value counts themselves, for frequency-aware methods (None when not fitted).
        min_count: the count below which a value is out of vocabulary.

    Example:
        >>> VocabularyStats.of(features, vocabulary).full_rows  # the collisionless table's rows
        1326
    """

    cardinalities: Mapping[str, int]
    vocabulary: Vocabulary | None = None
    min_count: int = 1

    @classmethod
    def of(
        cls, features: Sequence[CategoricalFeature], vocabulary: Vocabulary | None, min_count: int = 1
    ) -> VocabularyStats:
        """The statistics of `features` (empty cardinalities without a vocabulary)."""
        if vocabulary is None:
            return cls({}, None, min_count)
        cards = {f.name: vocabulary.cardinality(f.name, min_count) for f in row_owners(features)}
        return cls(cards, vocabulary, min_count)

    @property
    def known(self) -> bool:
        """Whether cardinalities were counted."""
        return bool(self.cardinalities)

    @property
    def full_rows(self) -> int:
        """Rows of the collisionless table: |V_f| + 1 (the out-of-vocabulary row) per feature."""
        return sum(n + 1 for n in self.cardinalities.values())


Choice = TypeVar("Choice", bound=Enum)


def parse_choice(choices: type[Choice], value: Choice | str, field: str) -> Choice:
    """`value` as a member of the enum `choices`, for an option named `field`.

    Raises:
        ValueError: naming the option and its valid values.
    """
    try:
        return choices(value)
    except ValueError:
        raise ValueError(f"{field} must be one of {[c.value for c in choices]}, got {value!r}") from None


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


class EmbeddingMethod(ABC):
    """One embedding method: its name, options, budget solver and rebuild-from-config.

    Subclasses set `name` and `options` and implement `solve` and `from_config`; `register` makes them
    available to `build_embedding`, `embedding_from_config`, configs and the CLI.

    Example:
        >>> get_method("unified").parse_options({"num_tables": 2})
        UnifiedOptions(num_tables=2, chunks={}, default_chunks=1, private_max_cardinality=0)
    """

    name: ClassVar[str] = ""
    options: ClassVar[type] = NoOptions
    budgeted: ClassVar[bool] = True
    """False for fixed-size methods (collisionless): they take no budget."""
    above_full_note: ClassVar[str] = "more rows than distinct training values (meant for collision studies?)"
    """What a budget above the collisionless size means for this method (said in a warning)."""
    shares_rows: ClassVar[bool] = False
    """True for methods whose layers let a feature read another's rows (`CategoricalFeature.share_with`)."""
    staged: ClassVar[bool] = False
    """True for methods trained in stages (optembed: supernet, search, retraining), which
    `featmux.training` runs; `build_embedding` alone gives their final layer at a prior shape."""
    shorthands: ClassVar[frozenset[str]] = frozenset()
    """Options that configs and the CLI also accept as top-level keys (unified's `num_tables`, ...)."""

    def parse_options(self, raw: Mapping[str, Any] | Any) -> Any:
        """The method's options dataclass from a mapping (`embedding_options`); unknown keys are errors."""
        if isinstance(raw, self.options):
            return raw
        if not isinstance(raw, Mapping):
            raise ValueError(f"{self.name} options must be a mapping, got {raw!r}")
        valid = [f.name for f in dataclasses.fields(self.options)]
        unknown = sorted(set(raw) - set(valid))
        if unknown:
            hint = f"valid options are {valid}" if valid else "it takes no options"
            raise ValueError(f"unknown {self.name} option(s) {unknown}; {hint}")
        return self.options(**raw)

    def check_features(self, options: Any, names: Sequence[str]) -> None:
        """Options that name features must name existing ones (ValueError listing the valid names)."""
        return  # by default no option names a feature

    def check_budget(self, budget: Any) -> None:
        """Reject, before any data is read, a `Budget` this method cannot use (ValueError saying why)."""
        return  # by default every budget is usable

    @staticmethod
    def counted_costs(stats: VocabularyStats, target: BudgetTarget | None, why: str) -> tuple[int, int]:
        """(bytes per stored value, bytes per key) of `target`, for a method that counts training values.

        Args:
            stats: the vocabulary statistics; a method that counts values refuses to run without them.
            target: the budget (always given to such a method).
            why: what the method needs the vocabulary for, for the error.
        """
        if stats.vocabulary is None:
            raise ValueError(f"{why}: it needs a vocabulary")
        assert target is not None
        return target.costs

    @abstractmethod
    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: Any,
    ) -> dict[str, Any]:
        """The layer's config (what `from_config` takes) that best uses `target` without exceeding it.

        Args:
            features: the categorical features.
            target: the budget (None only for methods that are not `budgeted`).
            stats: cardinalities (and counts) of the training split.
            embedding_dim: D.
            options: the method's options dataclass.
        """

    @abstractmethod
    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        """The layer `config` describes (untrained: weights come from `load_state_dict` or training)."""

    def fill(self, layer: FeatureEmbedding, vocabulary: Vocabulary, min_count: int) -> None:
        """Copy what the layer needs from the vocabulary (e.g. collisionless keys) into it, once."""
        return  # by default a layer keeps no vocabulary


_METHODS: dict[str, EmbeddingMethod] = {}
_discovered = False


def register(method: EmbeddingMethod) -> EmbeddingMethod:
    """Make `method` available by its name; a module calls this once, at import."""
    if not method.name or method.name != method.name.lower():
        raise ValueError(f"a method name must be lower case and not empty, got {method.name!r}")
    known = _METHODS.get(method.name)
    if known is not None and type(known) is not type(method):
        raise ValueError(f"two embedding methods are named {method.name!r}")
    _METHODS[method.name] = method
    return method


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("featmux.embeddings")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"featmux.embeddings.{module.name}")
    _discovered = True


def method_names() -> list[str]:
    """Names of every registered method, sorted."""
    _discover()
    return sorted(_METHODS)


def shorthand_owners() -> dict[str, list[str]]:
    """Each top-level shorthand key -> the methods that accept it."""
    _discover()
    owners: dict[str, list[str]] = {}
    for name in sorted(_METHODS):
        for key in _METHODS[name].shorthands:
            owners.setdefault(key, []).append(name)
    return owners


def normalize_name(name: str) -> str:
    """`Hash-Embedding` -> `hash_embedding`: names are case- and dash-insensitive."""
    return name.strip().lower().replace("-", "_")


def get_method(name: str) -> EmbeddingMethod:
    """The method registered as `name` (case-insensitive).

    Raises:
        ValueError: naming the known methods.
    """
    key = normalize_name(name)
    if key not in _METHODS:
        _discover()
    if key not in _METHODS:
        raise ValueError(f"unknown embedding method {name!r}; choose one of {method_names()}")
    return _METHODS[key]


__all__ = [
    "BudgetTarget",
    "BudgetUnit",
    "EmbeddingMethod",
    "NoOptions",
    "VocabularyStats",
    "get_method",
    "method_names",
    "normalize_name",
    "parse_choice",
    "register",
    "shorthand_owners",
]
