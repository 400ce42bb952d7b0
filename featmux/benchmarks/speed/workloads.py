"""The data every contender reads (exported once) and the model settings they share."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from featmux.data.cache import EncodedDataset
from featmux.data.encoded import EncodedChunk
from featmux.features import CategoricalFeature, Schema, ValueEncoding

# 5.19M rows in all (embedding-bound: dense Adam would touch all of them at every step)
CRITEO_LIKE = (
    1460, 583, 1_000_000, 800_000, 305, 24, 12_517, 633, 3, 93_145, 5_683, 1_100_000, 3_194, 27,
    14_992, 900_000, 10, 5_652, 2_173, 4, 1_000_000, 18, 15, 286_181, 105, 142_572,
)  # fmt: skip


def save_split(directory: Path, split: str, ids: np.ndarray, labels: np.ndarray) -> None:
    """Write one split's per-field ids and labels as `<directory>/<split>.npz` (atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{split}.tmp.npz"
    np.savez(tmp, ids=ids.astype(np.int64), labels=labels.astype(np.float32))
    os.replace(tmp, directory / f"{split}.npz")


def export_frappe(frappe_dir: Path, out: Path, log: Callable[[str], None]) -> Path:
    """Frappe's train/validation/test files as per-field indices (0 = unseen in train) in `out`."""
    if (out / "meta.json").is_file():
        return out
    from featmux.data.prepare import prepare

    log(f"exporting Frappe from {frappe_dir}")
    data = prepare("frappe", frappe_dir, cache_root=out / "cache")
    names = data.schema.feature_names
    keys = [data.vocabulary[n].keys for n in names]
    for split, ds in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        assert ds is not None
        chunk = EncodedChunk.concat(list(ds.chunks()))
        ids = np.empty_like(chunk.ids)
        for i, k in enumerate(keys):
            pos = np.searchsorted(k, chunk.ids[:, i])
            hit = k[np.minimum(pos, k.size - 1)] == chunk.ids[:, i]
            ids[:, i] = np.where(hit, pos + 1, 0)
        save_split(out, split, ids, chunk.labels)
    meta = {"dataset": "frappe", "fields": list(names), "vocab_sizes": [int(k.size) + 1 for k in keys]}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def export_synthetic(rows: tuple[int, int, int], seed: int, out: Path, log: Callable[[str], None]) -> Path:
    """Criteo-like synthetic rows (`CRITEO_LIKE` vocabularies, value id = index) split train/valid/test."""
    meta_path = out / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("rows") == list(rows):
        return out
    from featmux.data.synthetic import SyntheticConfig, iter_synthetic

    config = SyntheticConfig(cardinalities=CRITEO_LIKE, seed=seed)
    start = 0
    for split, n in zip(("train", "valid", "test"), rows, strict=True):
        log(f"generating {n:,} synthetic {split} rows")
        frames = list(iter_synthetic(config, n, start_row=start))
        ids = np.concatenate([f.select(config.feature_names).to_numpy() for f in frames])
        labels = np.concatenate([f.get_column("label").to_numpy() for f in frames])
        save_split(out, split, ids, labels)
        start += n
    meta = {
        "dataset": "synthetic",
        "fields": list(config.feature_names),
        "vocab_sizes": list(CRITEO_LIKE),
        "rows": list(rows),
        "seed": seed,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def int_schema(num_fields: int) -> Schema:
    """The schema of the exported arrays: fields f0..f{n-1}, ids used as INT fingerprints."""
    return Schema("label", tuple(CategoricalFeature(f"f{i}", ValueEncoding.INT) for i in range(num_fields)))


def encoded_splits(data: Path) -> dict[str, EncodedDataset]:
    """The exported arrays as featmux shard caches (ids used as INT fingerprints).

    A cache is rebuilt whenever its source array changed (e.g. re-exported with other row counts), so
    featmux always trains on the very rows the peers read.
    """
    out = {}
    for split in ("train", "valid", "test"):
        source = data / f"{split}.npz"
        target = data / "featmux" / split
        stamp_file = data / "featmux" / f"{split}.source"
        stat = source.stat()
        stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        fresh = (target / "meta.json").is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp
        if not fresh:
            shutil.rmtree(target, ignore_errors=True)
            with np.load(source) as z:
                ids, labels = z["ids"], z["labels"]
            chunk = EncodedChunk(ids, (), np.zeros((ids.shape[0], 0), np.float32), labels)
            EncodedDataset.write(target, int_schema(ids.shape[1]), [chunk])
            stamp_file.write_text(stamp)
        out[split] = EncodedDataset(target)
    return out


# -- contenders (each runs in its own process) ---------------------------------------------------------------


def model_options(spec: dict[str, Any]) -> dict[str, Any]:
    """The model options every contender shares (MLP, batch norm; DCN-v2's parallel cross layers)."""
    options = {"hidden": list(spec["hidden"]), "batch_norm": bool(spec.get("batch_norm", False))}
    if spec["model"] == "deepfm":
        return options
    return {**options, "cross_layers": spec["cross_layers"], "structure": "parallel"}


BARS_DCNV2 = "configs/frappe_dcnv2.yaml"
"""The Frappe BARS DCN-v2 set-up the `loop` and `inference` parts measure."""


def bars_setup(frappe_dir: Path, cache_dir: Path, threads: int) -> tuple[Any, Any]:
    """(ExperimentConfig, PreparedData) of the Frappe BARS DCN-v2 set-up (`BARS_DCNV2`), encoded once.

    Args:
        frappe_dir: the Frappe libFM files.
        cache_dir: where the encoded splits are cached.
        threads: torch threads of the runs.
    """
    from featmux.benchmarks.speed.config import repo_root
    from featmux.data.prepare import prepare
    from featmux.training.experiment import ExperimentConfig

    config = ExperimentConfig.from_yaml(
        repo_root() / BARS_DCNV2, data=frappe_dir, threads=threads, progress=False, cache_dir=cache_dir
    )
    data = prepare(
        config.dataset, config.data, config.dataset_options, config.cache_dir, False, lambda _m: None
    )
    return config, data


def dense_flops_per_sample(model: nn.Module) -> int:
    """FLOPs of one training sample in the model's linear layers: 2 * in * out each, x3 for fwd + bwd.

    Backward costs two matmuls per layer (input and weight gradients; the first layer's input gradient
    is needed for the embeddings), so a training step is 3x the forward. Elementwise work is not counted.
    """
    return sum(6 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
