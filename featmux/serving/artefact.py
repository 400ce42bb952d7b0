"""The artefact directory `featmux export` writes, and reading it back.

    artefact.json        manifest: schema, model spec, fingerprint rules, salts, vocabularies, precision
    weights.safetensors  the scoring model's state (quantized: each table's codes, scales and biases)
    program.pt2          `torch.export` program: fingerprints -> logits (see `featmux.serving.export`)
    model.onnx           optional, the same graph in ONNX

The JSON describes everything a runtime outside featmux needs to reproduce the graph's inputs and its
hashing: how each raw value becomes an int64 fingerprint, and each table's salts, offsets and sizes
(row = splitmix64(splitmix64(fingerprint) ^ salt) mod rows + start, with 64-bit wrap-around).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featmux.embeddings import CollisionlessEmbedding, HashingEmbedding
from featmux.embeddings.adaptive import AdaptiveEmbedding
from featmux.embeddings.base import TableEmbedding
from featmux.embeddings.unified import _SharedTable
from featmux.embeddings.zch import ZchEmbedding
from featmux.features import Schema, ValueEncoding
from featmux.hashing import MISSING
from featmux.models import CTRModel
from featmux.training.checkpoint import build_from_spec, model_spec

ARTEFACT_FORMAT = 1
MANIFEST = "artefact.json"
WEIGHTS_FILE = "weights.safetensors"
PROGRAM_FILE = "program.pt2"
ONNX_FILE = "model.onnx"

FINGERPRINT_RULES = {
    ValueEncoding.STRING.value: "xxh3-64 (seed 0) of the UTF-8 bytes, as int64 (two's complement)",
    ValueEncoding.INT.value: "the integer itself, int64 (uint64 ids keep their bits)",
    ValueEncoding.HEX.value: "the text parsed as unsigned hexadecimal (at most 16 digits), as int64",
    "missing": "null, or an empty string after stripping surrounding whitespace",
}


class ArtefactError(ValueError):
    """A directory that is not a readable featmux artefact (the message names the file)."""


def _table_rules(table: TableEmbedding) -> dict[str, Any]:
    order = [*table.univalent, *table.multivalent]
    if isinstance(table, HashingEmbedding):
        return {
            "method": "hashing",
            "features": {
                f.name: {"salt": int(salt), "rows": int(size), "start": int(start)}
                for f, salt, size, start in zip(
                    order, table.salts.tolist(), table.sizes.tolist(), table.starts.tolist(), strict=True
                )
            },
        }
    if isinstance(table, _SharedTable):
        slots = [(f.name, c) for f in order for c in range(table.chunks_of(f))]
        return {
            "method": "unified-shared",
            "slots": [
                {"feature": name, "chunk": chunk, "salt": int(salt), "rows": int(size), "start": int(start)}
                for (name, chunk), salt, size, start in zip(
                    slots,
                    table.slot_salts.tolist(),
                    table.slot_sizes.tolist(),
                    table.slot_starts.tolist(),
                    strict=True,
                )
            ],
        }
    if isinstance(table, CollisionlessEmbedding):
        return {
            "method": "collisionless",
            "rule": "row = start + 1 + position of the fingerprint in the sorted vocabulary; unseen: start",
            "features": {  # a feature with share_with: its owner's start and vocabulary
                f.name: {
                    "start": int(table.row_starts[j]),
                    "vocabulary_size": table.vocab_sizes[f.row_owner],
                }
                for f, j in zip(order, table.owner_index, strict=True)
            },
        }
    if isinstance(table, AdaptiveEmbedding):
        keys = table.keys.tolist()
        return {
            "method": "adaptive",
            "rule": "row = hot_start + position of the fingerprint in the feature's sorted hot_keys; a value "
            "not among them: num_hot + splitmix64(splitmix64(fingerprint) ^ salt) mod shared_rows",
            "num_hot": table.num_hot,
            "shared_rows": table.shared_rows,
            "features": {
                f.name: {"salt": int(salt), "hot_start": lo, "hot_keys": keys[lo:hi]}
                for f, salt, (lo, hi) in zip(order, table.salts.tolist(), table._key_slices, strict=True)
            },
        }
    if isinstance(table, ZchEmbedding):
        return {
            "method": "zch",
            "rule": "id = (fingerprint & (2^id_shift - 1)) | (position << id_shift); row = the slot the map "
            "holds id in (weights: mch._mch_sorted_raw_ids, ascending, and mch._mch_remapped_ids_mapping, "
            "the slot of each); an id it does not hold: slots - 1 + position",
            "id_shift": table.id_shift,
            "slots": table.slots,
            "features": {f.name: {"position": i} for i, f in enumerate(order)},
        }
    raise ArtefactError(f"no export rules for table layer {type(table).__name__}")


def _vocabularies(tables: list[TableEmbedding]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for table in tables:
        if isinstance(table, CollisionlessEmbedding):
            order = [*table.univalent, *table.multivalent]
            for f, j in zip(order, table.owner_index, strict=True):
                lo, hi = table._key_slices[j]
                out[f.name] = table.keys[lo:hi].tolist()
    return out


def describe_model(model: CTRModel, schema: Schema) -> dict[str, Any]:
    """The manifest entries that describe a (fp32) model: spec, inputs, fingerprint and table rules.

    Args:
        model: the trained model.
        schema: its schema.

    Returns:
        JSON-able entries `spec`, `inputs`, `fingerprint`, `tables` and `vocabularies`.
    """
    tables = model.embedding.table_modules()
    return {
        "spec": model_spec(model, schema),
        "inputs": {
            "ids": [f.name for f in schema.univalent],
            "dense": [f.name for f in schema.numeric],
            "bags": [f.name for f in schema.multivalent],
        },
        "fingerprint": {
            "rules": FINGERPRINT_RULES,
            "missing": MISSING,
            "features": {f.name: f.encoding.value for f in schema.categorical},
        },
        "tables": {name: _table_rules(m) for name, m in model.embedding.named_modules() if m in tables},
        "vocabularies": _vocabularies(tables),
    }


@dataclass(frozen=True)
class Artefact:
    """An artefact directory's manifest, read and checked.

    Args:
        path: the directory.
        manifest: the parsed `artefact.json`.

    Example:
        >>> artefact = read_artefact("runs/frappe-export")
        >>> artefact.precision, artefact.schema.feature_names[:2]
        ('fp32', ('user', 'item'))
    """

    path: Path
    manifest: dict[str, Any]

    @property
    def schema(self) -> Schema:
        """The schema the model was trained on."""
        return Schema.from_dict(self.manifest["spec"]["schema"])

    @property
    def precision(self) -> str:
        """The tables' precision: "fp32", "fp16", "int8" or "int4"."""
        return str(self.manifest["precision"])

    def file(self, key: str) -> Path:
        """The path of file `key` (weights, program, onnx); ArtefactError if it is absent."""
        name = self.manifest["files"].get(key)
        path = self.path / name if name else None
        if path is None or not path.is_file():
            raise ArtefactError(f"{self.path}: the artefact has no {key} file")
        return path

    def eager_model(self) -> CTRModel:
        """The model rebuilt from the spec (quantized tables included) with the safetensors weights."""
        from safetensors.torch import load_file

        spec = self.manifest["spec"]
        if self.precision != spec["embedding"].get("precision", "fp32"):  # featmux's first int8 layout
            raise ArtefactError(f"{self.path}: {self.precision} tables of an older layout; export it again")
        model, _ = build_from_spec(spec)
        path = self.file("weights")
        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for damaged headers
            raise ArtefactError(f"{path}: unreadable safetensors file ({type(err).__name__}: {err})") from err
        model.load_state_dict(state)
        return model.eval()

    def program(self) -> torch.nn.Module:
        """The exported program as a callable module (program(ids, dense, bags) -> logits)."""
        path = self.file("program")
        try:
            return torch.export.load(path).module()
        except Exception as err:  # a damaged archive fails in several ways inside torch
            raise ArtefactError(f"{path}: unreadable exported program ({type(err).__name__})") from err


def is_artefact(path: str | Path) -> bool:
    """Whether `path` is an artefact directory (it holds `artefact.json`)."""
    return (Path(path) / MANIFEST).is_file()


def read_artefact(path: str | Path) -> Artefact:
    """Read and check an artefact directory's manifest.

    Args:
        path: the directory `featmux export` wrote.

    Returns:
        The artefact.

    Raises:
        ArtefactError: no manifest, invalid JSON, or another format version.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtefactError(f"{path}: not an artefact directory (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtefactError(f"{manifest_path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("featmux_artefact") != ARTEFACT_FORMAT:
        raise ArtefactError(f"{manifest_path}: not a featmux artefact (format {ARTEFACT_FORMAT})")
    return Artefact(path, manifest)
