"""Benchmark grids: a small YAML file -> validated cells, one `ExperimentConfig` each.

A grid is datasets x models x embedding methods x budgets x seeds (x split seeds, optionally: the
seeds of the train/valid/test split carved from one file, as `ExperimentConfig.split_seed`; without
`split_seeds` every cell uses the source's split, as before, and keeps its key). Settings are layered:
the grid's `settings` apply to every cell, a dataset's `settings` override them, a method's `settings`
override those. The keys a grid varies (dataset, data, dataset_options, model, model_options, embedding,
budget, seed, split_seed) come from the grid itself and may not appear in any `settings`. The
collisionless method has a fixed size, so it gets one cell per (dataset, model, seed), labelled budget
"1"; hashing and unified get one cell per budget, where budget "1" means the collisionless parameter
count. `budget_seeds` gives some budgets their own seeds (e.g. 3 seeds at 1/16, 1 elsewhere: seeds
[0, 1, 2] and budget_seeds {"1/4": [0], "1/64": [0]}); collisionless cells take the seeds of budget
"1".

Data paths are relative to the repository root (the nearest directory above the YAML file that holds a
pyproject.toml), e.g. `../shared/data/frappe`.

Example YAML:

    name: pareto-frappe
    seeds: [0, 1, 2]
    budgets: ["1", "1/4", "1/16", "1/64"]
    methods: [collisionless, hashing, unified]
    settings: {epochs: 100, patience: 2}
    datasets:
      frappe:
        dataset: frappe
        data: ../shared/data/frappe
        models:
          dcnv2: {cross_layers: 4, hidden: [400, 400, 400], dropout: 0.4, batch_norm: true}
        settings: {embedding_dim: 10, batch_size: 4096, learning_rate: 1.0e-3, embedding_l2: 0.05}

Example:
    >>> grid = BenchmarkGrid.from_yaml("benchmarks/configs/frappe_pareto.yaml")
    >>> cells = grid.cells()          # every cell validated as an ExperimentConfig
    >>> cells[0].key
    'frappe/dcnv2/collisionless/1/seed0'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from featmux.embeddings import Budget, get_method
from featmux.embeddings.registry import shorthand_owners

if TYPE_CHECKING:
    from featmux.training.experiment import ExperimentConfig

GRID_KEYS = frozenset(
    {
        "dataset",
        "data",
        "dataset_options",
        "model",
        "model_options",
        "embedding",
        "embedding_options",
        "budget",
        "seed",
        "split_seed",
    }
)
"""ExperimentConfig fields set by the grid, never by `settings`."""

VOLATILE_KEYS = frozenset({"threads", "progress", "cache_dir", "checkpoint_dir", "device"})
"""ExperimentConfig fields that do not change a cell's result (beyond float rounding: `device`); left out
of its fingerprint."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_STRICT = ConfigDict(extra="forbid", frozen=True)


def _experiment_fields() -> frozenset[str]:
    from featmux.training.experiment import ExperimentConfig

    return frozenset(ExperimentConfig.model_fields)


PER_CELL_KEYS = frozenset({"checkpoint_dir"})
"""ExperimentConfig fields the runner sets per cell (`run_benchmark(checkpoints=True)`)."""


def _check_settings(settings: Mapping[str, Any], where: str) -> None:
    reserved = sorted(set(settings) & GRID_KEYS)
    if reserved:
        raise ValueError(f"{where}: {reserved} are set by the grid, not by settings")
    per_cell = sorted(set(settings) & PER_CELL_KEYS)
    if per_cell:
        raise ValueError(f"{where}: {per_cell} is set per cell by the runner (bench run --checkpoints)")
    valid = _experiment_fields() | set(shorthand_owners())  # e.g. unified's num_tables
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise ValueError(
            f"{where}: unknown setting(s) {unknown}; valid settings are {sorted(valid - GRID_KEYS)}"
        )


def _check_label(kind: str, label: str) -> str:
    if not _LABEL.match(label):
        raise ValueError(f"{kind} label {label!r} must use letters, digits, '_', '.', '-'")
    return label


class MethodEntry(BaseModel):
    """One embedding method of the grid.

    Args:
        embedding: a registered method name (default: the method's label).
        options: the method's `embedding_options` (e.g. {num_tables: 2, default_chunks: 2} for unified).
        settings: ExperimentConfig keys for this method only (e.g. learning_rate).
    """

    model_config = _STRICT

    embedding: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_settings(value, "method settings")
        return value


class DatasetEntry(BaseModel):
    """One dataset of the grid, with its base settings.

    Args:
        dataset: the source name (frappe, movielens, criteo, avazu, csv, synthetic).
        data: its file or directory, relative to the repository root (None for synthetic).
        dataset_options: source options (e.g. `ratings` for movielens, `rows` for synthetic).
        models: model name -> model options (e.g. dcnv2: {cross_layers: 4, hidden: [400, 400, 400]}).
        settings: ExperimentConfig keys for this dataset (embedding_dim, batch_size, learning_rate, ...).
        budgets: budgets for this dataset instead of the grid's.
        methods: labels of the grid's methods to run on this dataset (default: all).
    """

    model_config = _STRICT

    dataset: str
    data: str | None = None
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    budgets: list[str] | None = None
    methods: list[str] | None = None

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_settings(value, "dataset settings")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for label in value:
            _check_label("model", label)
        return {k: dict(v or {}) for k, v in value.items()}


def _budget_list(value: list[str], where: str) -> list[str]:
    if not value:
        raise ValueError(f"{where}: give at least one budget")
    parsed = [Budget.parse(str(b)) for b in value]
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"{where}: duplicate budgets in {value}")
    return [str(b) for b in value]


class BenchmarkGrid(BaseModel):
    """A benchmark grid: datasets x models x methods x budgets x seeds (see the module docstring).

    Args:
        name: the benchmark's name.
        description: free text.
        datasets: dataset label -> its entry.
        methods: method label -> entry; a list of method names is short for {name: {}}.
        budgets: budgets of hashing / unified (`1`, `1/16`, `rows:N`, `params:N`).
        seeds: seeds; every cell is run once per seed.
        split_seeds: split seeds (None: the source's own split); every cell is run once per seed and
            split seed.
        budget_seeds: seeds of the listed budgets instead of `seeds` (budget "1" includes collisionless).
        settings: ExperimentConfig keys shared by every cell.

    Example:
        >>> grid = BenchmarkGrid.from_yaml("benchmarks/configs/frappe_pareto.yaml")
        >>> [c.key for c in grid.cells()][:2]
        ['frappe/dcnv2/collisionless/1/seed0', 'frappe/dcnv2/hashing/1/seed0']
    """

    model_config = _STRICT

    name: str
    description: str = ""
    datasets: dict[str, DatasetEntry] = Field(min_length=1)
    methods: dict[str, MethodEntry] = Field(min_length=1)
    budgets: list[str]
    seeds: list[int] = Field(min_length=1)
    split_seeds: list[int] | None = Field(None, min_length=1)
    budget_seeds: dict[str, list[int]] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("methods", mode="before")
    @classmethod
    def _method_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(v): {} for v in value}
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        return _budget_list([str(v) for v in value], "budgets") if isinstance(value, list) else value

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_settings(value, "settings")
        return value

    @model_validator(mode="after")
    def _references(self) -> BenchmarkGrid:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"duplicate seeds in {self.seeds}")
        if self.split_seeds is not None and len(set(self.split_seeds)) != len(self.split_seeds):
            raise ValueError(f"duplicate split seeds in {self.split_seeds}")
        for label, method in self.methods.items():
            _check_label("method", label)
            try:
                get_method(method.embedding or label)
            except ValueError as err:
                hint = "" if method.embedding else " (say which it uses: embedding: unified, ...)"
                raise ValueError(f"method {label!r}: {err}{hint}") from None
        for label, entry in self.datasets.items():
            _check_label("dataset", label)
            unknown = sorted(set(entry.methods or ()) - set(self.methods))
            if unknown:
                raise ValueError(f"dataset {label!r} names unknown method(s) {unknown}")
            if entry.budgets is not None:
                _budget_list(entry.budgets, f"dataset {label!r} budgets")
        budgets = {Budget.parse(b) for b in [*self.budgets, "1"]}
        budgets |= {Budget.parse(b) for e in self.datasets.values() for b in e.budgets or ()}
        for budget, seeds in self.budget_seeds.items():
            if Budget.parse(str(budget)) not in budgets:
                raise ValueError(f"budget_seeds: {budget!r} is not a budget of the grid")
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"budget_seeds {budget!r}: give distinct seeds, got {seeds}")
        return self

    def seeds_of(self, budget: str) -> list[int]:
        """The seeds a budget's cells run with (`budget_seeds`, else `seeds`)."""
        wanted = Budget.parse(budget)
        given = [s for b, s in self.budget_seeds.items() if Budget.parse(str(b)) == wanted]
        return given[0] if given else list(self.seeds)

    @classmethod
    def from_yaml(cls, path: str | Path) -> BenchmarkGrid:
        """Load and validate a grid file (unknown keys are errors)."""
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with name, datasets, methods, budgets, seeds")
        return cls(**data)

    def method(self, label: str) -> str:
        """The embedding method (its registered name) behind a method label."""
        entry = self.methods[label]
        return get_method(entry.embedding or label).name

    def cells(self) -> list[Cell]:
        """Every cell of the grid, each validated as an ExperimentConfig (errors name the cell).

        Order: dataset, model, seed, split seed, method, budget (largest budget first), so an interrupted
        run has complete seeds rather than one method at every seed.
        """
        cells: list[Cell] = []
        errors: list[str] = []
        for ds_label, ds in self.datasets.items():
            budgets = ds.budgets if ds.budgets is not None else self.budgets
            budgets = sorted(budgets, key=_budget_order)
            methods = ds.methods if ds.methods is not None else list(self.methods)
            seeds = dict.fromkeys([*self.seeds, *(s for b in budgets for s in self.seeds_of(b))])
            for model, model_options in ds.models.items():
                for seed, split in [(s, k) for s in seeds for k in self.split_seeds or [None]]:
                    for m_label in methods:
                        method = self.method(m_label)
                        budgeted = get_method(method).budgeted
                        method_budgets = budgets if budgeted else ["1"]
                        options = self.methods[m_label].options
                        for budget in method_budgets:
                            if seed not in self.seeds_of(budget):
                                continue
                            spec: dict[str, Any] = {
                                **self.settings,
                                **ds.settings,
                                **self.methods[m_label].settings,
                                "dataset": ds.dataset,
                                "data": ds.data,
                                "dataset_options": dict(ds.dataset_options),
                                "model": model,
                                "model_options": dict(model_options),
                                "embedding": method,
                                "budget": budget if budgeted else None,
                                "seed": seed,
                            }
                            if split is not None:  # absent otherwise: old cells keep their fingerprints
                                spec["split_seed"] = split
                            if options:  # only then: the fingerprints of option-less cells stay put
                                spec["embedding_options"] = dict(options)
                            cell = Cell(ds_label, model, m_label, budget, seed, spec, split)
                            try:
                                cell.experiment_config()
                                _check_model_options(model, model_options)
                            except ValueError as err:  # pydantic's ValidationError is a ValueError
                                errors.append(f"{cell.key}: {err}")
                            cells.append(cell)
        if errors:
            raise ValueError("invalid benchmark cells:\n" + "\n".join(errors))
        names = [c.filename for c in cells]
        if len(set(names)) != len(names):
            raise ValueError("two cells map to the same result file; use distinct labels and budgets")
        return cells


def _check_model_options(model: str, options: Mapping[str, Any]) -> None:
    """Build the model's config dataclass from `options` (unknown or bad options raise ValueError)."""
    from featmux.models import MODELS
    from featmux.models.base import config_from_dict

    _, config_cls = MODELS[model.lower().replace("-", "").replace("_", "")]
    try:
        config_from_dict(config_cls, options)
    except TypeError as err:
        raise ValueError(f"model options {dict(options)}: {err}") from err


def _budget_order(budget: str) -> tuple[int, float]:
    """Fractions first, largest first; then absolute budgets, largest first."""
    b = Budget.parse(budget)
    if b.fraction is not None:
        return (0, -b.fraction)
    return (1, -float(b.rows if b.rows is not None else b.params or 0))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "", text.replace("/", "-").replace(":", "-"))


@dataclass(frozen=True)
class Cell:
    """One run of a grid.

    Args:
        dataset: the dataset's label in the grid.
        model: the model's label (a model name).
        method: the method's label.
        budget: the budget as written ("1" for collisionless).
        seed: the seed.
        spec: the ExperimentConfig keys as written (data path relative to the repository root).
        split_seed: the split seed (None: the source's own split, as in grids without `split_seeds`).
    """

    dataset: str
    model: str
    method: str
    budget: str
    seed: int
    spec: Mapping[str, Any] = field(repr=False)
    split_seed: int | None = None

    @property
    def key(self) -> str:
        """`dataset/model/method/budget/seedN` (then `/splitK` with a split seed)."""
        return cell_key(self.dataset, self.model, self.method, self.budget, self.seed, self.split_seed)

    @property
    def filename(self) -> str:
        """The cell's result file name (safe on any file system)."""
        parts = (self.dataset, self.model, self.method, _slug(self.budget), f"seed{self.seed}")
        split = () if self.split_seed is None else (f"split{self.split_seed}",)
        return "__".join((*parts, *split)) + ".json"

    @property
    def fingerprint(self) -> str:
        """`fingerprint_on()` on the cell's own device (the grid's `device` setting, else the CPU)."""
        return self.fingerprint_on()

    def fingerprint_on(self, device: str | None = None) -> str:
        """Hash of every setting that can change the result (not threads, progress or cache paths).

        bf16 enters as the choice the run itself makes on this machine and `device` (`bf16` pinned, or
        left to auto: `RunConfig.bf16_choice`): `bf16: true` where it is on, nothing where it is off. So a
        grid resumed on a machine of the other kind finds its cells stale instead of mixing float32 and
        bf16 results, float32 cells keep the fingerprints they had before bf16 existed, and pinning
        `bf16: false` resumes them on a bf16 machine.

        Args:
            device: the device the cells run on (`featmux bench run --device`; None: the cell's own).
        """
        return _hash(self._fingerprinted(device))

    def _fingerprinted(self, device: str | None) -> dict[str, Any]:
        kept = {k: v for k, v in self.spec.items() if k not in VOLATILE_KEYS and k != "bf16"}
        config = self.experiment_config(overrides={"device": device} if device else None)
        if config.bf16_choice().enabled:  # the run's own decision (hardware, batch size)
            kept["bf16"] = True
        return kept

    def accepts(
        self, fingerprint: str | None, device: str | None = None, ran_bf16: bool | None = None
    ) -> bool:
        """Whether a stored result with `fingerprint` is current for this cell on `device`.

        A result that recorded its autocast (`ran_bf16`) is current only if that matches the cell's
        choice here: auto bf16 can resolve differently over time (the batch-size floor) and between
        machines. Besides `fingerprint_on(device)`, a result hashed before bf16 entered fingerprints (its
        settings as written) is accepted when it ran the precision the cell now resolves to (a result
        without the record ran float32: bf16 did not exist yet).

        Args:
            fingerprint: the stored result's fingerprint.
            device: the device the cell would run on.
            ran_bf16: the stored result's `autocast.bf16` (None: not recorded).
        """
        wants_bf16 = "bf16" in self._fingerprinted(device)
        if ran_bf16 is not None and ran_bf16 != wants_bf16:
            return False
        if fingerprint == self.fingerprint_on(device):
            return True
        legacy = {k: v for k, v in self.spec.items() if k not in VOLATILE_KEYS}
        return bool(ran_bf16) == wants_bf16 and fingerprint == _hash(legacy)

    def labels(self) -> dict[str, Any]:
        """The cell's coordinates in the grid."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "method": self.method,
            "budget": self.budget,
            "seed": self.seed,
        } | ({} if self.split_seed is None else {"split_seed": self.split_seed})

    def experiment_config(
        self, root: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> ExperimentConfig:
        """The cell's ExperimentConfig (relative data and cache paths start at `root`; `overrides` last)."""
        from featmux.training.experiment import ExperimentConfig

        values = dict(self.spec)
        for key in ("data", "cache_dir"):  # paths in a grid are relative to the repository root
            if values.get(key) is not None and root is not None:
                path = Path(values[key])
                values[key] = path if path.is_absolute() else Path(root) / path
        values.update(overrides or {})
        return ExperimentConfig(**values)


def _hash(settings: Mapping[str, Any]) -> str:
    canonical = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cell_key(
    dataset: str, model: str, method: str, budget: str, seed: int, split_seed: int | None = None
) -> str:
    """A cell's key: `dataset/model/method/budget/seedN`, then `/splitK` with a split seed."""
    key = f"{dataset}/{model}/{method}/{budget}/seed{seed}"
    return key if split_seed is None else f"{key}/split{split_seed}"


def repo_root(path: str | Path) -> Path:
    """The nearest directory at or above `path` holding a pyproject.toml (else `path`'s directory)."""
    start = Path(path).resolve()
    start = start if start.is_dir() else start.parent
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return start
