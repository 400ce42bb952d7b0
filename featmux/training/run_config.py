"""Settings shared by batch experiments and online runs: the data, the embedding at a budget, the model.

`ExperimentConfig` (batch: epochs, early stopping) and `OnlineConfig` (a stream cut into partitions)
both extend `RunConfig`, so a flag or YAML key means the same thing in both. Unknown keys are errors:
a typo never silently becomes a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from featmux.embeddings import Budget, EmbeddingSpec, Precision, PruneMethod, check_features, get_method
from featmux.embeddings.registry import shorthand_owners
from featmux.embeddings.unified import check_placement, placement
from featmux.features import Schema
from featmux.models import MODELS
from featmux.models.base import config_from_dict
from featmux.training.config import NonFinitePolicy, OptimizerKind, check_device
from featmux.training.precision import Bf16Choice, resolve_bf16

# options mapping -> the key it belongs to: flags update the file's mapping while that key is unchanged
_OPTIONS_OF = {"dataset_options": "dataset", "model_options": "model", "embedding_options": "embedding"}


class RunConfig(BaseModel):
    """The data source, the embedding layer and its budget, the model and the optimizer.

    Example:
        >>> ExperimentConfig(dataset="movielens", data="ml-1m", embedding="hashing", budget="1/4")
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "synthetic"
    data: Path | None = None
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    model: str = "dcnv2"
    model_options: dict[str, Any] = Field(default_factory=dict)
    embedding: str = "unified"
    embedding_options: dict[str, Any] = Field(default_factory=dict)
    embedding_dim: int = Field(16, ge=1)
    budget: str | None = None
    min_count: int = Field(1, ge=1)
    precision: Precision = Precision.FP32  # tables stored for serving: quantized after training
    prune: float = Field(0.0, ge=0, lt=1)  # share of table entries dropped after training, stored sparse
    prune_method: PruneMethod = PruneMethod.MAGNITUDE  # pep: learned thresholds, then a cut to `prune`
    pep_init: float = -10.0  # initial PEP threshold logit s (threshold sigmoid(s))
    qat: bool = False  # train on the rows `precision` (int8 or int4) will serve: quantization-aware
    batch_size: int = Field(4096, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    embedding_l2: float = Field(0.0, ge=0)
    optimizer: OptimizerKind = OptimizerKind.ADAM
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"  # where the model trains: "cpu" or "cuda"
    bf16: bool | None = None  # bf16 autocast: True, False or None (on where the device has native bf16)
    checkpoint_dir: Path | None = None
    checkpoint_every_steps: int | None = Field(None, ge=1)
    skip_bad_rows: bool = False
    on_nonfinite: NonFinitePolicy = NonFinitePolicy.STOP  # a NaN/Inf loss stops the run, or skips its batch

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """Top-level shorthands of method options (`num_tables: 2`) move into `embedding_options`."""
        if not isinstance(data, dict):
            return data
        owners = shorthand_owners()
        given = {k: v for k, v in data.items() if k in owners}
        if not given:
            return data
        method = get_method(str(data.get("embedding", cls.model_fields["embedding"].default)))
        wrong = sorted(set(given) - method.shorthands)
        if wrong:
            whose = sorted({m for k in wrong for m in owners[k]})
            raise ValueError(f"{wrong} are options of the {'/'.join(whose)} method, not of {method.name}")
        rest = {k: v for k, v in data.items() if k not in given}
        return rest | {"embedding_options": {**(data.get("embedding_options") or {}), **given}}

    @field_validator("embedding")
    @classmethod
    def _embedding(cls, value: str) -> str:
        return get_method(value).name  # case-insensitive; unknown names list the registered methods

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            Budget.parse(value)  # raises with a message saying what to write
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        key = value.lower().replace("-", "").replace("_", "")
        if key not in MODELS:
            raise ValueError(f"unknown model {value!r}; choose one of {sorted(MODELS)}")
        return key

    @model_validator(mode="after")
    def _one_serving_form(self) -> Self:
        if self.prune > 0 and self.precision is not Precision.FP32:
            raise ValueError("give --prune or --precision, not both: they are separate serving forms")
        staged = self.embedding_spec().implementation.staged
        if staged and (self.prune > 0 or self.precision is not Precision.FP32 or self.qat):
            raise ValueError(
                f"{self.embedding} searches its own table shape: give no --prune, --precision or --qat"
            )
        if self.prune_method is PruneMethod.PEP and self.prune == 0:
            raise ValueError("prune_method pep needs a target sparsity: give --prune S (0 < S < 1)")
        if self.qat and self.precision not in (Precision.INT8, Precision.INT4):
            raise ValueError("qat trains for integer rows: give it with precision int8 or int4")
        qat = getattr(self.embedding_spec().options, "qat", Precision.FP32)
        if qat is not Precision.FP32 and (self.prune > 0 or self.precision not in (Precision.FP32, qat)):
            raise ValueError(
                f"qat_bits trains the tables for {qat.value} serving: give no --prune, and --precision "
                f"only as {qat.value}"
            )
        return self

    @model_validator(mode="after")
    def _embedding_and_model_options(self) -> Self:
        check_options(self.embedding_spec(), self.model, self.model_options)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Self:
        """Load a YAML mapping of config keys; `overrides` (e.g. CLI flags) win.

        An options mapping (`dataset_options`, `model_options`, `embedding_options`) is updated key by
        key rather than replaced, while its dataset, model or embedding stays the file's: e.g.
        `--dataset-option behaviour=liked` keeps the file's `ratings` and `history`.

        Args:
            path: the YAML file.
            **overrides: keys that replace the file's (options mappings: that update them).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not YAML, or not a mapping (pydantic's ValidationError for bad keys).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:  # its message says where: "line 3, column 7"
            raise ValueError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        merged = {**data, **overrides}
        for options, owner in _OPTIONS_OF.items():
            same_owner = merged.get(owner) == data.get(owner)
            if (
                same_owner
                and isinstance(data.get(options), dict)
                and isinstance(overrides.get(options), dict)
            ):
                merged[options] = {**data[options], **overrides[options]}
        return cls(**merged)

    def train_options(self) -> dict[str, Any]:
        """The `TrainConfig` options every run takes from these settings (subclasses add their own)."""
        return {
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "embedding_l2": self.embedding_l2,
            "optimizer": self.optimizer,
            "checkpoint_every_steps": self.checkpoint_every_steps,
            "seed": self.seed,
            "threads": self.threads,
            "on_nonfinite": self.on_nonfinite,
            "device": self.device,
            "autocast_bf16": self.bf16_choice().enabled,
        }

    def bf16_choice(self) -> Bf16Choice:
        """Whether this run trains under bf16 autocast, and why (`bf16` None: native and batch >= 512)."""
        return resolve_bf16(self.bf16, self.device, batch_size=self.batch_size)

    def embedding_spec(self) -> EmbeddingSpec:
        """The embedding layer to build."""
        return EmbeddingSpec(
            method=self.embedding,
            embedding_dim=self.embedding_dim,
            budget=Budget.parse(self.budget) if self.budget is not None else None,
            min_count=self.min_count,
            options=self.embedding_options,
        )

    def check_schema(self, schema: Schema) -> None:
        """Options naming features must name features of the data (checked before any data is read).

        Args:
            schema: the data source's schema.

        Raises:
            ValueError: naming the unknown features and listing the valid ones, or sub-tables that no
                (feature, chunk) slot would reach.
        """
        spec = self.embedding_spec()
        check_features(spec, schema.categorical)
        options = spec.options
        if spec.method == "unified" and options.num_tables > 1:
            # private tables (decided by the vocabulary, later) can only take slots away
            chunks = {f.name: options.chunks.get(f.name, options.default_chunks) for f in schema.categorical}
            slots = [(name, c) for name, k in chunks.items() for c in range(k)]
            check_placement(placement(slots, options.num_tables), options.num_tables)


def check_options(spec: EmbeddingSpec, model: str, model_options: dict[str, Any]) -> None:
    """Up-front checks of options whose errors would otherwise surface only after the data is encoded.

    Args:
        spec: the embedding to build.
        model: a key of `MODELS`.
        model_options: the model's config keys (unknown keys and invalid values fail here).

    Raises:
        ValueError: saying what to change.
    """
    config_from_dict(MODELS[model][1], model_options)
    if spec.budget is not None:
        spec.implementation.check_budget(spec.budget)
