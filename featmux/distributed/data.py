"""Each rank's share of the data stream: the same global batches as a single process, split by rank.

Global batch g is exactly the batch `EncodedDataset.batches(G, shuffle, seed, epoch)` yields (both cut
the rows by `EncodedDataset.batch_pieces`), so a W-rank run sees the data of a one-process run with batch G.
Rank r takes the contiguous rows [r * b, (r + 1) * b) of it, b = ceil(n_g / W), and only those rows are
gathered, converted to tensors, hashed and looked up on rank r; shards are memory-mapped, so a rank
reads the pages of its own rows (contiguous ones for unshuffled evaluation; with shuffled training
batches its rows are spread over most pages of a shard) and never decodes a whole shard into memory.
Every rank gets the same number of batches of the same size b (TorchRec's collectives need every
rank in every step): a short last batch is padded with copies of a real row whose `mask` is 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from featmux.data.cache import Batch, EncodedDataset, chunk_to_batch
from featmux.data.encoded import EncodedChunk


@dataclass(frozen=True)
class RankBatch:
    """One rank's part of a global batch.

    Args:
        batch: b rows (padded rows included).
        mask: float32 [b]: 1 for real rows, 0 for padding.
        global_rows: real rows in the whole global batch, over all ranks (n_g).
    """

    batch: Batch
    mask: torch.Tensor
    global_rows: int

    @property
    def real_rows(self) -> int:
        return int(self.mask.sum())


def _rank_piece_rows(pieces: list[tuple[int, np.ndarray]], lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
    """Rows [lo, hi) of the concatenated pieces, still as (shard, indices) pieces."""
    out, start = [], 0
    for shard, index in pieces:
        end = start + index.size
        a, b = max(lo, start), min(hi, end)
        if a < b:
            out.append((shard, index[a - start : b - start]))
        start = end
    return out


def rank_batches(
    dataset: EncodedDataset,
    batch_size: int,
    rank: int,
    world_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
) -> Iterator[RankBatch]:
    """This rank's part of each global batch of `batch_size` rows (see the module docstring).

    Args:
        dataset: the encoded split.
        batch_size: G, rows of a global batch (all ranks together).
        rank: this rank.
        world_size: W.
        shuffle: shuffle as `EncodedDataset.batches` does (seeded by (seed, epoch)).
        seed: data-order seed.
        epoch: epoch number (changes the shuffle).
        start_batch: skip this many global batches (resume mid-epoch).

    Example:
        >>> for part in rank_batches(train, 8192, rank, world, shuffle=True, seed=0, epoch=0):
        ...     logits = model(part.batch.sparse, part.batch.dense)
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    local = -(-batch_size // world_size)
    loaded: dict[int, EncodedChunk] = {}
    for pieces in dataset.batch_pieces(batch_size, shuffle, seed, epoch, start_batch):
        n = sum(index.size for _, index in pieces)
        b = min(local, -(-n // world_size))  # the last global batch may be short
        mine = _rank_piece_rows(pieces, rank * b, min((rank + 1) * b, n))
        real = sum(index.size for _, index in mine)
        if real < b:  # pad with the first row of the global batch (any real row will do)
            mine.append((pieces[0][0], np.repeat(pieces[0][1][:1], b - real)))
        needed = {shard for shard, _ in mine}
        for shard in list(loaded):
            if shard not in needed:
                del loaded[shard]  # shards are consumed in order: keep at most the ones in use
        parts = []
        for shard, index in mine:
            if shard not in loaded:
                loaded[shard] = dataset.shard(shard, mmap=True)
            parts.append(loaded[shard].take(index))
        mask = torch.zeros(b, dtype=torch.float32)
        mask[:real] = 1.0
        yield RankBatch(chunk_to_batch(EncodedChunk.concat(parts)), mask, n)
