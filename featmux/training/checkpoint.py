"""Checkpoints: written atomically, loaded with `weights_only=True`, self-describing.

A checkpoint stores what rebuilds the model (schema, embedding config, model name and config) beside
the weights, so `load_model` needs no YAML or code from the training run. Writes go to a temporary
file in the same directory, are fsync'ed, then renamed over the target: a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from featmux.embeddings import embedding_from_config
from featmux.features import Schema
from featmux.models import CTRModel, build_model

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: truncated, corrupted, or not a featmux checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; any damage becomes a `CheckpointError` naming the file."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for truncated/corrupted zips
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict) or obj.get("featmux_format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a featmux checkpoint (format {FORMAT_VERSION})")
    return obj


def model_spec(model: CTRModel, schema: Schema) -> dict[str, Any]:
    """Plain description that rebuilds `model` (without its weights)."""
    return {
        "schema": schema.to_dict(),
        "embedding": model.embedding.config(),
        "model": model.name,
        "model_config": model.model_config(),
        "num_dense": model.num_dense,
    }


def build_from_spec(spec: dict[str, Any], device: torch.device | None = None) -> tuple[CTRModel, Schema]:
    """An untrained model of the shape `spec` describes."""
    schema = Schema.from_dict(spec["schema"])
    embedding = embedding_from_config(schema.categorical, spec["embedding"], device)
    return build_model(spec["model"], embedding, int(spec["num_dense"]), spec["model_config"]), schema


def save_model(
    path: str | Path, model: CTRModel, schema: Schema, extra: dict[str, Any] | None = None
) -> None:
    """Save a self-describing model file (spec + weights), atomically."""
    atomic_save(
        {
            "featmux_format": FORMAT_VERSION,
            "spec": model_spec(model, schema),
            "state": model.state_dict(),
            **(extra or {}),
        },
        path,
    )


def load_model(path: str | Path, device: torch.device | None = None) -> tuple[CTRModel, Schema]:
    """Rebuild a model saved by `save_model` (or any featmux checkpoint) and load its weights."""
    payload = safe_load(path)
    model, schema = build_from_spec(payload["spec"], device)
    model.load_state_dict(payload["state"])
    return model, schema
