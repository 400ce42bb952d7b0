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

from featmux.embeddings import Budget, EmbeddingMethod, EmbeddingSpec, check_features
from featmux.embeddings.unified import check_placement, placement
from featmux.features import Schema
from featmux.models import MODELS
from featmux.models.base import config_from_dict
from featmux.training.config import NonFinitePolicy, OptimizerKind, check_device
from featmux.training.precision import Bf16Choice, resolve_bf16


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
    embedding: EmbeddingMethod = EmbeddingMethod.UNIFIED
    embedding_dim: int = Field(16, ge=1)
    budget: str | None = None
    min_count: int = Field(1, ge=1)
    num_tables: int = Field(1, ge=1)
    chunks: dict[str, int] = Field(default_factory=dict)
    default_chunks: int = Field(1, ge=1)
    private_max_cardinality: int = Field(0, ge=0)
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
    def _embedding_and_model_options(self) -> Self:
        check_options(self.embedding_spec(), self.model, self.model_options)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Self:
        """Load a YAML mapping of config keys; `overrides` (e.g. CLI flags) win.

        Args:
            path: the YAML file.
            **overrides: keys that replace the file's.

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
        return cls(**{**data, **overrides})

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
        """Whether this run trains under bf16 autocast, and why (`bf16` None: where it is native)."""
        return resolve_bf16(self.bf16, self.device)

    def embedding_spec(self) -> EmbeddingSpec:
        """The embedding layer to build."""
        return EmbeddingSpec(
            method=self.embedding,
            embedding_dim=self.embedding_dim,
            budget=Budget.parse(self.budget) if self.budget is not None else None,
            min_count=self.min_count,
            num_tables=self.num_tables,
            chunks=self.chunks,
            default_chunks=self.default_chunks,
            private_max_cardinality=self.private_max_cardinality,
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
        if spec.method is EmbeddingMethod.UNIFIED and spec.num_tables > 1:
            # private tables (decided by the vocabulary, later) can only take slots away
            chunks = {f.name: spec.chunks.get(f.name, spec.default_chunks) for f in schema.categorical}
            slots = [(name, c) for name, k in chunks.items() for c in range(k)]
            check_placement(placement(slots, spec.num_tables), spec.num_tables)


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
    budget = spec.budget
    if spec.method is EmbeddingMethod.HASHING and budget is not None and (budget.fraction or 0) > 1:
        raise ValueError(
            f"budget {budget} is larger than the collisionless size: per-feature hashing caps every "
            "feature at its vocabulary, so the excess could not be used; give a budget of at most 1"
        )
