"""Encoded datasets on disk: shards of numpy arrays, read back one shard at a time.

Text is parsed and fingerprinted once; every later epoch (and every later run with the same source)
reads the shards, so epochs after the first do not re-parse text. Memory stays bounded by about two
shards whatever the dataset size. Layout:

    <dir>/meta.json                       schema, rows per shard
    <dir>/shard-00000/ids.npy             int64 [n, F_u]
    <dir>/shard-00000/dense.npy           float32 [n, N]
    <dir>/shard-00000/labels.npy          float32 [n]
    <dir>/shard-00000/bag{j}_values.npy   int64 [L]       (one pair per multivalent feature)
    <dir>/shard-00000/bag{j}_offsets.npy  int64 [n + 1]

A cache directory is written under a temporary name and renamed when complete, so a killed run
never leaves a half-written cache that looks valid.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from featmux.data.encoded import EncodedBag, EncodedChunk
from featmux.embeddings.vocabulary import Vocabulary
from featmux.features import Schema
from featmux.sparse import Bag, SparseFeatures

CACHE_FORMAT = 1
DEFAULT_SHARD_ROWS = 1 << 18


@dataclass(frozen=True)
class Batch:
    """A training batch as tensors.

    Args:
        sparse: categorical fingerprints.
        dense: float32 [B, N].
        labels: float32 [B].
    """

    sparse: SparseFeatures
    dense: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.sparse.to(device), self.dense.to(device), self.labels.to(device))


def chunk_to_batch(chunk: EncodedChunk) -> Batch:
    """Zero-copy view of an encoded chunk as tensors."""
    bags = tuple(Bag(torch.from_numpy(b.values), torch.from_numpy(b.offsets)) for b in chunk.bags)
    return Batch(
        SparseFeatures(torch.from_numpy(chunk.ids), bags),
        torch.from_numpy(chunk.dense),
        torch.from_numpy(chunk.labels),
    )


def _save_shard(path: Path, chunk: EncodedChunk) -> None:
    path.mkdir(parents=True)
    np.save(path / "ids.npy", chunk.ids)
    np.save(path / "dense.npy", chunk.dense)
    np.save(path / "labels.npy", chunk.labels)
    for j, bag in enumerate(chunk.bags):
        np.save(path / f"bag{j}_values.npy", bag.values)
        np.save(path / f"bag{j}_offsets.npy", bag.offsets)


class EncodedDataset:
    """A directory of encoded shards (see the module docstring). Open with `EncodedDataset(path)`.

    Args:
        path: the cache directory.

    Example:
        >>> ds = EncodedDataset.write("cache/train", schema, chunks)
        >>> for batch in ds.batches(4096, shuffle=True, seed=0, epoch=0): ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path} is not an encoded dataset (no meta.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"{self.path}: cache format {meta.get('format')} is not {CACHE_FORMAT}; delete it to rebuild"
            )
        self.schema = Schema.from_dict(meta["schema"])
        self.shard_rows: list[int] = meta["shard_rows"]
        self.info: dict = meta.get("info", {})

    @classmethod
    def write(
        cls,
        path: str | Path,
        schema: Schema,
        chunks: Iterable[EncodedChunk],
        shard_rows: int = DEFAULT_SHARD_ROWS,
        info: dict | Callable[[], dict] | None = None,
    ) -> EncodedDataset:
        """Write `chunks` as shards of about `shard_rows` rows; atomic (temporary dir, then rename).

        `info` goes to meta.json; given as a function, it is called once every chunk is written (so it
        can describe the pass, e.g. the rows it skipped).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            sizes: list[int] = []
            pending: list[EncodedChunk] = []
            pending_rows = 0

            def flush() -> None:
                nonlocal pending, pending_rows
                if pending_rows:
                    merged = EncodedChunk.concat(pending)
                    _save_shard(tmp / f"shard-{len(sizes):05d}", merged)
                    sizes.append(len(merged))
                pending, pending_rows = [], 0

            for chunk in chunks:
                start = 0
                while start < len(chunk):
                    take = min(len(chunk) - start, shard_rows - pending_rows)
                    part = (
                        chunk
                        if (start == 0 and take == len(chunk))
                        else chunk.take(np.arange(start, start + take))
                    )
                    pending.append(part)
                    pending_rows += take
                    start += take
                    if pending_rows >= shard_rows:
                        flush()
            flush()
            meta = {
                "format": CACHE_FORMAT,
                "schema": schema.to_dict(),
                "shard_rows": sizes,
                "info": (info() if callable(info) else info) or {},
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path)

    def __len__(self) -> int:
        return sum(self.shard_rows)

    @property
    def num_shards(self) -> int:
        return len(self.shard_rows)

    def shard(self, index: int, mmap: bool = False) -> EncodedChunk:
        """Load shard `index` into memory, or (`mmap`) map it: `take` then reads only the pages of the
        rows it takes (what each rank of a distributed run does with its share)."""
        d = self.path / f"shard-{index:05d}"
        mode = "r" if mmap else None

        def load(name: str) -> np.ndarray:
            return np.load(d / name, mmap_mode=mode)

        bags = tuple(
            EncodedBag(load(f"bag{j}_values.npy"), load(f"bag{j}_offsets.npy"))
            for j in range(len(self.schema.multivalent))
        )
        return EncodedChunk(load("ids.npy"), bags, load("dense.npy"), load("labels.npy"))

    def chunks(self) -> Iterator[EncodedChunk]:
        """Every shard in order."""
        for i in range(self.num_shards):
            yield self.shard(i)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batch_pieces(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
    ) -> Iterator[list[tuple[int, np.ndarray]]]:
        """The rows of each batch of `batches` as (shard, row indices) pieces, without loading any shard.

        Shuffling permutes the shard order and the rows inside each shard (a shard-local shuffle keeps
        memory bounded), drawn from (seed, epoch). `start_batch` skips that many batches. The last
        batch may be short.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(self.num_shards) if shuffle else np.arange(self.num_shards)
        perms = [rng.permutation(self.shard_rows[s]) if shuffle else None for s in order]
        skip = start_batch * batch_size
        pieces: list[tuple[int, np.ndarray]] = []
        held = 0
        for shard_id, perm in zip(order, perms, strict=True):
            size = self.shard_rows[shard_id]
            if skip >= size:
                skip -= size
                continue
            index = (perm if perm is not None else np.arange(size))[skip:]
            skip = 0
            pos = 0
            while pos < index.size:
                take = min(batch_size - held, index.size - pos)
                pieces.append((int(shard_id), index[pos : pos + take]))
                held += take
                pos += take
                if held == batch_size:
                    yield pieces
                    pieces, held = [], 0
        if held:
            yield pieces

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Batches over the whole dataset, deterministic given (seed, epoch) (see `batch_pieces`).

        A shard is loaded when its first rows are needed and held while later batches take from it;
        `start_batch` skips batches without loading their shards, which is how a resumed run continues
        mid-epoch.
        """
        loaded: tuple[int, EncodedChunk] | None = None  # shards are consumed in order: hold the current one
        for pieces in self.batch_pieces(batch_size, shuffle, seed, epoch, start_batch):
            if drop_last and sum(index.size for _, index in pieces) < batch_size:
                return
            parts = []
            for shard_id, index in pieces:
                if loaded is None or loaded[0] != shard_id:
                    loaded = (shard_id, self.shard(shard_id))
                parts.append(loaded[1].take(index))
            yield chunk_to_batch(EncodedChunk.concat(parts))

    def fit_vocabulary(self) -> Vocabulary:
        """Value counts of every categorical feature over the whole dataset (one streaming pass)."""
        vocab = Vocabulary(self.schema.feature_names)
        uni, multi = self.schema.univalent, self.schema.multivalent
        for chunk in self.chunks():
            for i, f in enumerate(uni):
                vocab.update(f.name, chunk.ids[:, i])
            for j, f in enumerate(multi):
                vocab.update(f.name, chunk.bags[j].values)
        return vocab

    def label_mean(self) -> float:
        total = sum(float(c.labels.sum()) for c in self.chunks())
        return total / max(1, len(self))
