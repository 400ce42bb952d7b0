"""Checkpoints: written atomically, loaded with `weights_only=True`, self-describing.

A checkpoint stores what rebuilds the model (schema, embedding config, model name and config) beside
the weights, so `load_model` needs no YAML or code from the training run. Writes go to a temporary
file in the same directory, are fsync'ed, then renamed over the target: a crash mid-write leaves the
previous checkpoint intact.

Damage is detected, not just crashes: torch's zip container checks no CRC on tensor data, so a flipped
byte would load silently. Every featmux checkpoint therefore carries a digest of its whole content
(`checksum`), verified on load. Resumable checkpoints rotate (`last.pt` -> `last.prev.pt`), and
`load_resumable` falls back to the previous one when the newest is truncated or corrupted.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featmux.atomic import atomic_open
from featmux.embeddings import embedding_from_config
from featmux.features import Schema
from featmux.models import CTRModel, build_model

FORMAT_VERSION = 1
CHECKSUM_KEY = "checksum"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: truncated, corrupted, or not a featmux checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (temporary file + fsync + rename, `featmux.atomic`)."""
    with atomic_open(path) as f:
        torch.save(obj, f)


def _reason(err: Exception) -> str:
    """A one-line reason for a failed `torch.load` (torch's own messages run to many lines)."""
    if isinstance(err, pickle.UnpicklingError):
        return "its content is not a checkpoint that loads safely: damaged, or not written by featmux"
    text = str(err).strip()
    first = text.splitlines()[0].split(". ")[0] if text else ""  # the first sentence
    if "central directory" in first:
        first += " (the file is truncated, or not a torch checkpoint)"
    return f"{type(err).__name__}: {first[:240]}"


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        t = t.to_dense() if t.layout != torch.strided else t
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        digest.update(b"{%d" % len(obj))
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, list | tuple):
        digest.update(b"[%d" % len(obj))
        for value in obj:
            _feed(digest, value)
    else:
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())


def payload_digest(payload: Mapping[str, Any]) -> str:
    """Digest of a checkpoint payload's content (tensor bytes, shapes, dtypes and every plain value).

    Args:
        payload: the checkpoint dict; its own `checksum` entry, if any, is left out.

    Returns:
        A hex string; equal for equal content, whatever the file layout.
    """
    digest = hashlib.blake2b(digest_size=16)
    _feed(digest, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def with_checksum(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` plus its `checksum` entry (verified by `safe_load`)."""
    return {**payload, CHECKSUM_KEY: payload_digest(payload)}


def safe_load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; any damage becomes a `CheckpointError` naming the file.

    Args:
        path: the checkpoint.

    Returns:
        The payload, its checksum verified when it has one.

    Raises:
        CheckpointError: truncated, corrupted (checksum mismatch) or not a featmux checkpoint.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for truncated/corrupted zips
        raise CheckpointError(f"{path}: unreadable checkpoint ({_reason(err)})") from err
    if not isinstance(obj, dict) or obj.get("featmux_format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a featmux checkpoint (format {FORMAT_VERSION})")
    if CHECKSUM_KEY in obj and payload_digest(obj) != obj[CHECKSUM_KEY]:
        raise CheckpointError(f"{path}: corrupted checkpoint (its content does not match its checksum)")
    return obj


def previous_path(path: str | Path) -> Path:
    """Where `save_rotating` keeps the checkpoint it replaced: `last.pt` -> `last.prev.pt`."""
    return Path(path).with_suffix(".prev.pt")


def save_rotating(payload: Mapping[str, Any], path: str | Path) -> None:
    """Write `payload` (with its checksum) atomically to `path`, keeping the one it replaces as previous.

    At every moment a good checkpoint exists: `path`, or (between the rename and the write) the previous.

    Args:
        payload: the checkpoint dict.
        path: the newest checkpoint's file, e.g. `run/last.pt`.
    """
    path = Path(path)
    if path.exists():
        path.replace(previous_path(path))
    atomic_save(with_checksum(payload), path)


@dataclass(frozen=True)
class Restored:
    """A checkpoint found by `load_resumable`.

    Args:
        payload: its content.
        path: the file it came from (the newest, or the previous when the newest was damaged).
        damaged: one message per newer checkpoint that was unusable (and set aside as `*.damaged`).

    Example:
        >>> found = load_resumable("runs/a/last.pt", required=("state",))
        >>> found.path.name if found else None
        'last.pt'
    """

    payload: dict[str, Any]
    path: Path
    damaged: tuple[str, ...] = ()


def load_resumable(path: str | Path, required: Sequence[str] = ()) -> Restored | None:
    """The newest usable of `path` and its previous checkpoint (see `save_rotating`).

    A damaged newest checkpoint (truncated, corrupted, missing `required` entries) is renamed to
    `<name>.damaged`, so that the next `save_rotating` cannot push the good previous one out. Temporary
    files left in the directory by `atomic_save` writes that were killed are removed.

    Args:
        path: the newest checkpoint's file, e.g. `run/last.pt`.
        required: payload entries a usable checkpoint must have.

    Returns:
        The checkpoint, or None when there is none.

    Raises:
        CheckpointError: checkpoints exist but none is usable (each one's problem is named).
    """
    path = Path(path)
    if path.parent.is_dir():  # temporary files of `atomic_save` writes that were killed (any checkpoint)
        for stale in path.parent.glob(".*.pt.*.tmp"):
            stale.unlink(missing_ok=True)
    damaged: list[str] = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            payload = safe_load(candidate)
            missing = [key for key in required if key not in payload]
            if missing:
                raise CheckpointError(f"{candidate}: not a resumable checkpoint (it lacks {missing})")
        except CheckpointError as err:
            damaged.append(str(err))
            continue
        if candidate != path and path.exists():
            path.replace(path.with_name(path.name + ".damaged"))
        return Restored(payload, candidate, tuple(damaged))
    if damaged:
        raise CheckpointError(
            "no usable checkpoint to resume from: "
            + "; ".join(damaged)
            + f". To start over, delete them, use another checkpoint directory than {path.parent}, or (batch "
            "runs) pass `featmux train --no-resume`."
        )
    return None


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
        with_checksum(
            {
                "featmux_format": FORMAT_VERSION,
                "spec": model_spec(model, schema),
                "state": model.state_dict(),
                **(extra or {}),
            }
        ),
        path,
    )


def load_model(path: str | Path, device: torch.device | None = None) -> tuple[CTRModel, Schema]:
    """Rebuild a model saved by `save_model` (or any featmux checkpoint) and load its weights."""
    payload = safe_load(path)
    model, schema = build_from_spec(payload["spec"], device)
    model.load_state_dict(payload["state"])
    return model, schema
