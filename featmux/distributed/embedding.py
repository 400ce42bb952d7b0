"""Table-based featmux embeddings expressed as TorchRec tables, so DistributedModelParallel can shard them.

`TorchRecEmbedding` wraps an unsharded featmux layer (`UnifiedEmbedding`, `HashingEmbedding`,
`CollisionlessEmbedding`) and gives the same `[B, S, D]` output from a TorchRec
`EmbeddingBagCollection` (EBC). Any featmux model takes it as its embedding module.

    featmux layer                           TorchRec EBC tables (T = num_tables)
    UnifiedEmbedding   shared [M, D]   ->   unified_t0 .. unified_t{T-1}: one per sub-table, read by
                                            every (feature, chunk) slot placed in it
                       private [R, D]  ->   private__<feature>: one per private feature
    HashingEmbedding   [sum M_f, D]    ->   hashing__<feature>: one per feature
    CollisionlessEmb.  [sum V_f+1, D]  ->   collisionless__<feature>: one per feature

Forward, in three steps:
    1. Hash: the wrapped layer's own row functions (`univalent_rows`, `bag_rows`, i.e.
       `featmux.hashing.mixer.salted_rows` or the vocabulary search) map fingerprints to rows of its
       table; subtracting the first row of the slot's TorchRec table gives the table-local row.
    2. Look up: one KeyedJaggedTensor with a key per slot (`feature#chunk`); univalent slots have
       length-1 bags, multivalent ones their bag lengths, K_f chunk copies each. Every table pools with
       SUM; MEAN slots are divided by their bag length afterwards, exactly as `F.embedding_bag` does,
       so features with different combiners can share one table.
    3. Arrange: the pooled KeyedTensor (whatever key order sharding produced) -> [B, S, D] in the
       featmux slot order.

Widths: FBGEMM's fused kernels need table widths divisible by 4 (on CPU too), and the paper's set-ups
use D = 30, 39 or 10. A TorchRec table is therefore D' = 4 ceil(D / 4) wide; the last D' - D columns
are never read (the output keeps the first D), get no gradient, and are dropped when weights go back
to featmux. Lookups stay bit-identical; the only visible effect is row-wise Adagrad, whose per-row
state averages g^2 over D' columns (D / D' of the featmux value).

The wrapped layer is kept as `index`, a copy whose tables are removed: it holds only the hashing
salts / vocabularies (buffers). Weights move both ways with `load_featmux_state_dict` and
`featmux_state_dict`, also when the EBC has been sharded by DistributedModelParallel.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode

from featmux.distributed._deps import require_torchrec

require_torchrec()

from torch.distributed._shard.sharded_tensor import ShardedTensor  # noqa: E402
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType  # noqa: E402

from featmux.embeddings.base import INIT_STD, FeatureEmbedding, TableEmbedding  # noqa: E402
from featmux.embeddings.collisionless import CollisionlessEmbedding  # noqa: E402
from featmux.embeddings.hashing import HashingEmbedding  # noqa: E402
from featmux.embeddings.unified import UnifiedEmbedding, placement, table_bounds  # noqa: E402
from featmux.features import Pooling  # noqa: E402
from featmux.sparse import SparseFeatures  # noqa: E402

_META = torch.device("meta")


@dataclass(frozen=True)
class TableDraw:
    """The N(0, std^2) initialization a featmux table would have drawn, kept to be replayed later.

    Args:
        rows: R, rows of the table.
        dim: D, its width.
        std: the standard deviation.
        rng_state: the CPU generator's state just before the draw.
    """

    rows: int
    dim: int
    std: float
    rng_state: torch.Tensor


_CHUNK_ELEMENTS = 1 << 22  # 16 MiB of float32 per replayed chunk


def _row_chunks(rows: int, dim: int) -> Iterator[tuple[int, int]]:
    """Row ranges [a, b) whose chunk-by-chunk `normal_` gives the values of one `normal_` of [rows, dim].

    torch's CPU normal_ transforms uniforms in blocks of 16 elements and redraws the last 16 of a tensor
    whose size is not a multiple of 16: chunks of a multiple of 16 elements, the last one at least 16
    (or the whole table), consume the generator and give values exactly as the single call does
    (`tests/distributed/test_embedding.py` checks it).
    """
    step = 16 // math.gcd(dim, 16)  # rows * dim is a multiple of 16 for multiples of `step` rows
    chunk = max(step, _CHUNK_ELEMENTS // dim // step * step)
    a = 0
    while a < rows:
        b = min(rows, a + chunk)
        if b < rows and (rows - b) * dim < 16:
            b = rows
        yield a, b
        a = b


def _draw_chunks(draw: TableDraw, generator: torch.Generator | None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, values [b - a, D]) of the table `draw` stands for, chunk by chunk from `generator`."""
    for a, b in _row_chunks(draw.rows, draw.dim):
        values = torch.empty(b - a, draw.dim)
        values.normal_(0.0, draw.std, generator=generator)
        yield a, values


class _TablesOnMeta(TorchFunctionMode):
    """Sends `torch.empty` (how `TableEmbedding` allocates its table) to the meta device; with `draws`,
    records each table's initialization and advances the global RNG past it, as if it had been drawn."""

    def __init__(self, draws: list[TableDraw] | None) -> None:
        super().__init__()
        self.draws = draws

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = _META
            out = func(*args, **kwargs)
            if self.draws is not None and out.dim() == 2 and out.is_floating_point():
                # the mode is off inside its own handler: this draws for real, in bounded chunks
                draw = TableDraw(out.shape[0], out.shape[1], INIT_STD, torch.get_rng_state())
                for _ in _draw_chunks(draw, None):
                    pass
                self.draws.append(draw)
            return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def tables_on_meta(draws: list[TableDraw] | None = None) -> Iterator[None]:
    """Build featmux embedding layers whose tables are not allocated (meta) but whose index is real.

    Inside the block, a featmux layer's tables land on the meta device (nothing allocated, nothing
    initialized) while its buffers (hash salts, collisionless vocabularies) are ordinary tensors: all
    `TorchRecEmbedding` needs to shard a table far larger than one host's memory.

    Args:
        draws: None, or a list that receives a `TableDraw` per table in construction order; the global
            RNG then advances as if the tables had been drawn (so what is built next initializes as in
            one process), and `TorchRecEmbedding.fill_from_draws` later writes each rank's shards with
            exactly the values the tables would have had.

    Example:
        >>> with tables_on_meta():
        ...     config = UnifiedEmbeddingConfig(rows=10**9, embedding_dim=16)
        ...     layer = UnifiedEmbedding(schema.categorical, config)
        >>> layer.shared.weight.device
        device(type='meta')
    """
    with _TablesOnMeta(draws):
        yield


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


@dataclass(frozen=True)
class TableSlice:
    """One TorchRec table: a block of rows of one featmux table.

    Args:
        name: the TorchRec table name (an EBC key, planner constraint key, checkpoint key).
        part: module path of the featmux `TableEmbedding` owning the rows ("" for the layer itself,
            "shared" / "private" inside a `UnifiedEmbedding`).
        start: first row of the block in that featmux table.
        rows: rows in the block.
        slots: the slots (`feature#chunk`, KJT keys) reading this table.
    """

    name: str
    part: str
    start: int
    rows: int
    slots: tuple[str, ...]


def _parts(layer: FeatureEmbedding) -> list[tuple[str, TableEmbedding]]:
    """The table-owning sub-layers of `layer`, in output-slot order, with their module paths."""
    if isinstance(layer, UnifiedEmbedding):
        return [("shared", layer.shared)] + (
            [("private", layer.private)] if layer.private is not None else []
        )
    if isinstance(layer, (HashingEmbedding, CollisionlessEmbedding)):
        return [("", layer)]
    raise TypeError(
        f"TorchRecEmbedding converts UnifiedEmbedding, HashingEmbedding and CollisionlessEmbedding; "
        f"got {type(layer).__name__}"
    )


def _slices(layer: FeatureEmbedding, path: str, part: TableEmbedding) -> list[TableSlice]:
    """Split one featmux table into TorchRec tables (see the module docstring)."""
    order = [*part.univalent, *part.multivalent]
    if any(f.share_with is not None for f in order):
        raise ValueError("TorchRec sharding does not support shared rows (CategoricalFeature.share_with)")
    names = part.slot_names
    if isinstance(layer, UnifiedEmbedding) and path == "shared":
        config = layer.unified_config
        if any(layer.shared.hot.values()) or layer.config().get("qat"):
            raise ValueError("TorchRec sharding does not support unified hot rows (hot_share) or qat_bits")
        slots = [(f.name, c) for f in order for c in range(config.chunks_of(f.name))]
        if [f"{n}#{c}" for n, c in slots] != list(names):
            raise RuntimeError(
                "unified slot order changed: featmux.distributed must follow featmux.embeddings"
            )
        where = placement(slots, config.num_tables, config.placement)
        return [
            TableSlice(
                f"unified_t{t}", path, start, size, tuple(f"{n}#{c}" for n, c in slots if where[(n, c)] == t)
            )
            for t, (start, size) in enumerate(table_bounds(config.rows, config.num_tables))
        ]
    if isinstance(part, HashingEmbedding):
        prefix, sizes = "hashing", [part.rows[f.name] for f in order]
    elif isinstance(part, CollisionlessEmbedding):
        prefix = "private" if isinstance(layer, UnifiedEmbedding) else "collisionless"
        sizes = [part.vocab_sizes[f.name] + 1 for f in order]
    else:  # pragma: no cover - _parts admits nothing else
        raise TypeError(type(part).__name__)
    out, start, used = [], 0, set()
    for f, size in zip(order, sizes, strict=True):
        name = f"{prefix}__{_safe_name(f.name)}"
        while name in used:  # two names that differ only in '.' / '-'
            name += "_"
        used.add(name)
        out.append(TableSlice(name, path, start, size, (f"{f.name}#0",)))
        start += size
    return out


class _Part(nn.Module):
    """Index-side data of one featmux table: its id columns, bags and per-slot table offsets."""

    def __init__(
        self, columns: list[int], bags: list[int], uni_offsets: list[int], bag_offsets: list[list[int]]
    ) -> None:
        super().__init__()
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.int64), persistent=False)
        self.register_buffer("uni_offsets", torch.tensor(uni_offsets, dtype=torch.int64), persistent=False)
        for j, offsets in enumerate(bag_offsets):
            self.register_buffer(
                f"bag_offsets_{j}", torch.tensor(offsets, dtype=torch.int64), persistent=False
            )
        self.bags = bags
        self.num_uni_slots = len(uni_offsets)

    def bag_offsets(self, j: int) -> torch.Tensor:
        return getattr(self, f"bag_offsets_{j}")


def _blocks(weight: torch.Tensor) -> list[tuple[torch.Tensor, int, int]]:
    """This rank's blocks of a TorchRec table weight: (tensor [h, w], row offset, column offset)."""
    if isinstance(weight, ShardedTensor):
        return [(s.tensor, *s.metadata.shard_offsets) for s in weight.local_shards()]
    return [(weight, 0, 0)]


class TorchRecEmbedding(FeatureEmbedding):
    """A featmux table embedding served by a TorchRec EmbeddingBagCollection: same `[B, S, D]` output.

    The EBC (`self.ebc`) is what DistributedModelParallel shards; everything else stays replicated.
    With the same weights, lookups are bit-identical to the wrapped featmux layer (`tests/distributed`).

    Args:
        layer: the featmux layer to express (its weights are copied unless they are on `meta`, see
            `tables_on_meta`; the layer itself is not kept). Tables the layer does not provide start
            as N(0, 0.01^2), like featmux tables; the global RNG is left untouched either way.
        device: where the EBC lives; `meta` allocates nothing (what DistributedModelParallel wants: it
            materializes only each rank's shards).

    Example:
        >>> config = UnifiedEmbeddingConfig(rows=50_000, embedding_dim=10)
        >>> layer = UnifiedEmbedding(schema.categorical, config)
        >>> emb = TorchRecEmbedding(layer)
        >>> torch.equal(emb(sparse), layer(sparse))
        True
        >>> model = DCNv2(TorchRecEmbedding(layer, device=torch.device("meta")), num_dense=0)  # to shard
    """

    method = "torchrec"

    def __init__(self, layer: FeatureEmbedding, device: torch.device | None = None) -> None:
        parts = _parts(layer)  # TypeError for layers without a table
        super().__init__(layer.features, layer.embedding_dim)
        tables = {id(p): p for _, part in parts for p in part.table_parameters()}
        # 1. the index: a copy of the layer without its tables (only salts / vocabularies remain)
        memo: dict[int, Any] = {
            i: nn.Parameter(torch.empty(p.shape, device=_META)) for i, p in tables.items()
        }
        self.index = copy.deepcopy(layer, memo)
        self._index_layers = [part for _, part in _parts(self.index)]  # plain list: registered via `index`
        for part in self._index_layers:
            del part.weight
        meta_buffers = [n for n, b in self.index.named_buffers() if b.is_meta]
        if meta_buffers:
            raise ValueError(
                f"layer buffers {meta_buffers} are on meta: build the layer with `tables_on_meta()` "
                "instead of device='meta' so its hash salts / vocabularies are real"
            )
        self.source_method = layer.method
        self._source_config = layer.config()
        # 2. the TorchRec tables and the slot -> table-row offsets
        self.tables: tuple[TableSlice, ...] = tuple(
            s for path, part in parts for s in _slices(layer, path, part)
        )
        start_of = {slot: (t.start, t) for t in self.tables for slot in t.slots}
        uni_pos = {f.name: i for i, f in enumerate(self.univalent)}
        bag_pos = {f.name: j for j, f in enumerate(self.multivalent)}
        self._parts = nn.ModuleList()
        keys: list[str] = []
        self._lengths_plan: list[tuple[str, int, int]] = []  # ("uni", slots, _) or ("bag", bag index, chunks)
        mean_slots: list[tuple[int, int]] = []  # (slot position, bag index) of MEAN-pooled bag slots
        for _, part in parts:
            chunks = {f.name: part.chunks_of(f) for f in (*part.univalent, *part.multivalent)}
            uni_slots = [f"{f.name}#{c}" for f in part.univalent for c in range(chunks[f.name])]
            bag_slots = [[f"{f.name}#{c}" for c in range(chunks[f.name])] for f in part.multivalent]
            self._parts.append(
                _Part(
                    [uni_pos[f.name] for f in part.univalent],
                    [bag_pos[f.name] for f in part.multivalent],
                    [start_of[s][0] for s in uni_slots],
                    [[start_of[s][0] for s in slots] for slots in bag_slots],
                )
            )
            if uni_slots:
                self._lengths_plan.append(("uni", len(uni_slots), 0))
            keys += uni_slots
            for f, slots in zip(part.multivalent, bag_slots, strict=True):
                if f.pooling is Pooling.MEAN:
                    mean_slots += [(len(keys) + c, bag_pos[f.name]) for c in range(len(slots))]
                self._lengths_plan.append(("bag", bag_pos[f.name], len(slots)))
                keys += slots
        if keys != list(self.index.slot_names):
            raise RuntimeError(f"slot order {keys} differs from the layer's {list(self.index.slot_names)}")
        self._keys = keys
        self._mean_slots = mean_slots
        self._perm_cache: dict[tuple[str, ...], torch.Tensor | None] = {}
        self.table_dim = -(-self.embedding_dim // 4) * 4  # D', see the module docstring
        # 3. the EBC, initialized like featmux tables, then filled with the layer's weights if it has them
        configs = [
            EmbeddingBagConfig(
                name=t.name,
                num_embeddings=t.rows,
                embedding_dim=self.table_dim,
                feature_names=list(t.slots),
                pooling=PoolingType.SUM,
                init_fn=partial(nn.init.normal_, std=INIT_STD),
            )
            for t in self.tables
        ]
        with torch.random.fork_rng(devices=[]):  # building the adapter leaves the global RNG alone
            self.ebc = EmbeddingBagCollection(tables=configs, device=device)
        real = [p for p in tables.values() if not p.is_meta]
        if real and (device is None or torch.device(device).type != "meta"):
            if len(real) != len(tables):
                raise ValueError("the layer mixes meta and allocated tables")
            self.load_featmux_state_dict(layer.state_dict())

    # -- the FeatureEmbedding contract -------------------------------------------------------------------
    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def config(self) -> dict[str, Any]:
        """The wrapped layer's config: `embedding_from_config` rebuilds the unsharded featmux layer."""
        return dict(self._source_config)

    def num_parameters(self) -> int:
        """Trainable table cells, rows x D, as the wrapped featmux layer counts them (whatever the
        sharding; the never-read padding columns of D' > D are not parameters of the model)."""
        return sum(t.rows for t in self.tables) * self.embedding_dim

    def memory_bytes(self) -> int:
        """Bytes allocated: the global TorchRec tables (rows x D', fp32) plus the replicated index buffers."""
        index = sum(b.numel() * b.element_size() for b in self.index.buffers())
        return sum(t.rows for t in self.tables) * self.table_dim * 4 + index

    def table_parameters(self) -> list[nn.Parameter]:
        """The EBC's weights while unsharded (a sharded EBC trains them with its fused optimizer)."""
        return list(self.ebc.parameters()) if isinstance(self.ebc, EmbeddingBagCollection) else []

    def set_sparse_gradients(self, enabled: bool) -> None:
        """Sparse gradients for the unsharded EBC's tables (for SparseAdam in the single-process Trainer)."""
        if isinstance(self.ebc, EmbeddingBagCollection):
            for bag in self.ebc.embedding_bags.values():
                bag.sparse = enabled

    @property
    def is_sharded(self) -> bool:
        return not isinstance(self.ebc, EmbeddingBagCollection)

    # -- forward -------------------------------------------------------------------------------------------
    def features_to_kjt(self, sparse: SparseFeatures) -> KeyedJaggedTensor:
        """Steps 1-2 of the module docstring: fingerprints -> table-local rows, one KJT key per slot.

        Args:
            sparse: ids [B, F_u] and one bag per multivalent feature.

        Returns:
            A KeyedJaggedTensor with keys `slot_names` and stride B.
        """
        self.check_inputs(sparse)
        batch = sparse.batch_size
        values: list[torch.Tensor] = []
        for part, layer in zip(self._parts, self._index_layers, strict=True):
            if part.num_uni_slots:
                ids = (
                    sparse.ids if part.columns.numel() == sparse.ids.shape[1] else sparse.ids[:, part.columns]
                )
                rows = layer.univalent_rows(ids) - part.uni_offsets  # [B, S_u], table-local
                values.append(rows.t().reshape(-1))  # slot-major, as the KJT wants
            for j, bag_index in enumerate(part.bags):
                rows = layer.bag_rows(j, sparse.bags[bag_index].values) - part.bag_offsets(j)  # [L, K]
                values.append(rows.t().reshape(-1))  # [K * L], chunk-major
        lengths: list[torch.Tensor] = []
        for kind, a, b in self._lengths_plan:
            if kind == "uni":
                lengths.append(torch.ones(a * batch, dtype=torch.int32, device=sparse.ids.device))
            else:
                bag_lengths = sparse.bags[a].offsets.diff().to(torch.int32)  # [B]
                lengths.append(bag_lengths.repeat(b))  # [K * B]
        return KeyedJaggedTensor(
            keys=self._keys,
            values=torch.cat(values) if len(values) > 1 else values[0],
            lengths=torch.cat(lengths) if len(lengths) > 1 else lengths[0],
            stride=batch,
        )

    def _permutation(self, keys: Sequence[str]) -> torch.Tensor | None:
        key = tuple(keys)
        if key not in self._perm_cache:
            if list(key) == self._keys:
                self._perm_cache[key] = None
            else:
                where = {k: i for i, k in enumerate(key)}
                self._perm_cache[key] = torch.tensor([where[k] for k in self._keys], dtype=torch.int64)
        return self._perm_cache[key]

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: ids [B, F_u] and bags -> [B, S, D] (the wrapped layer's slot order)."""
        pooled = self.ebc(self.features_to_kjt(sparse))  # KeyedTensor, [B, S * D] in the EBC's key order
        batch = sparse.batch_size
        emb = pooled.values().view(batch, len(self._keys), self.table_dim)  # [B, S, D']
        if self.table_dim != self.embedding_dim:
            emb = emb[:, :, : self.embedding_dim]  # [B, S, D]: padding columns are never read
        perm = self._permutation(pooled.keys())
        if perm is not None:
            emb = emb.index_select(1, perm.to(emb.device))
        if self._mean_slots:
            divisor = torch.ones(batch, len(self._keys), dtype=emb.dtype, device=emb.device)  # [B, S]
            for slot, bag_index in self._mean_slots:
                divisor[:, slot] = sparse.bags[bag_index].offsets.diff().clamp(min=1).to(emb.dtype)
            emb = emb / divisor.unsqueeze(2)  # sum / max(L, 1), as F.embedding_bag(mode="mean")
        return emb

    # -- weights both ways -----------------------------------------------------------------------------
    def _table_weights(self) -> dict[str, torch.Tensor]:
        prefix = "embedding_bags."
        state = self.ebc.state_dict()
        return {t.name: state[f"{prefix}{t.name}.weight"] for t in self.tables}

    @torch.no_grad()
    def load_featmux_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a featmux layer's state_dict (tables and vocabularies) into this module.

        Works on a sharded EBC too: each rank copies only the rows/columns of its own shards, so every
        rank must hold the full featmux state (fine up to a few GB).

        Args:
            state: `layer.state_dict()` of a featmux layer with this module's config.
        """
        weights = self._table_weights()
        for t in self.tables:
            key = f"{t.part}.weight" if t.part else "weight"
            if key not in state:
                raise KeyError(f"featmux state lacks {key!r} (table {t.name})")
            source = state[key][t.start : t.start + t.rows]  # [rows, D]
            if tuple(source.shape) != (t.rows, self.embedding_dim):
                expected = (t.rows, self.embedding_dim)
                raise ValueError(f"table {t.name}: featmux block {tuple(source.shape)}, expected {expected}")
            for tensor, r, c in _blocks(weights[t.name]):  # an [h, w] block at (r, c) of the [rows, D'] table
                h, w = tensor.shape
                real = max(0, min(w, self.embedding_dim - c))  # its columns that are not padding
                tensor[:, :real].copy_(source[r : r + h, c : c + real])
                tensor[:, real:].zero_()
        table_keys = {f"{t.part}.weight" if t.part else "weight" for t in self.tables}
        buffers = {k: v for k, v in state.items() if k not in table_keys}
        missing, unexpected = self.index.load_state_dict(buffers, strict=False)
        if missing or unexpected:
            raise KeyError(f"featmux state does not fit: missing {missing}, unexpected {unexpected}")

    @torch.no_grad()
    def fill_from_draws(self, draws: Sequence[TableDraw]) -> None:
        """Write this rank's shards with the initial values of the featmux tables `draws` recorded.

        Each featmux table is replayed from its recorded RNG state in bounded chunks (`_row_chunks`);
        every rank keeps only the rows and columns of its own shards, so no rank holds a whole table.

        Args:
            draws: what `tables_on_meta(draws)` recorded while the wrapped layer was built.
        """
        weights = self._table_weights()
        unused = list(draws)
        for path, _ in _parts(self.index):
            tables = [t for t in self.tables if t.part == path]
            rows = sum(t.rows for t in tables)
            draw = next((d for d in unused if (d.rows, d.dim) == (rows, self.embedding_dim)), None)
            if draw is None:
                name = path or "weight"
                raise ValueError(f"no recorded draw for the {rows} x {self.embedding_dim} table {name!r}")
            unused.remove(draw)
            blocks = [(t.start + r, c, tensor) for t in tables for tensor, r, c in _blocks(weights[t.name])]
            for tensor in (b[2] for b in blocks):
                tensor.zero_()  # the padding columns (D' > D) stay 0
            generator = torch.Generator().set_state(draw.rng_state)
            for a, values in _draw_chunks(draw, generator):
                b = a + values.shape[0]
                for start, c, tensor in blocks:  # rows [start, start + h) of the featmux table
                    lo, hi = max(a, start), min(b, start + tensor.shape[0])
                    real = max(0, min(tensor.shape[1], self.embedding_dim - c))
                    if lo < hi and real:
                        tensor[lo - start : hi - start, :real].copy_(values[lo - a : hi - a, c : c + real])

    @torch.no_grad()
    def featmux_state_dict(self, dst: int = 0) -> dict[str, torch.Tensor] | None:
        """The state_dict of the equivalent unsharded featmux layer (weight transfer back).

        With a sharded EBC this is a collective call (every rank must call it); the tables are gathered
        on rank `dst`, which gets the dict; the other ranks get None.

        Args:
            dst: the rank that receives the gathered tables.
        """
        weights = self._table_weights()
        sharded = any(isinstance(w, ShardedTensor) for w in weights.values())
        rank = dist.get_rank() if sharded else dst
        full: dict[str, torch.Tensor] = {}
        for t in self.tables:
            w = weights[t.name]
            if isinstance(w, ShardedTensor):
                out = torch.empty(t.rows, self.table_dim) if rank == dst else None
                w.gather(dst=dst, out=out)
                full[t.name] = out[:, : self.embedding_dim] if out is not None else out  # type: ignore[assignment]
            else:
                full[t.name] = w.detach()[:, : self.embedding_dim].cpu().clone()
        if rank != dst:
            return None
        state: dict[str, torch.Tensor] = {}
        for path, _ in _parts(self.index):
            blocks = sorted((t.start, full[t.name]) for t in self.tables if t.part == path)
            state[f"{path}.weight" if path else "weight"] = torch.cat([b for _, b in blocks])
        state.update({k: v.detach().cpu().clone() for k, v in self.index.state_dict().items()})
        return state

    def to_featmux(self, dst: int = 0) -> FeatureEmbedding | None:
        """The equivalent unsharded featmux layer with these weights (None on ranks other than `dst`)."""
        state = self.featmux_state_dict(dst)
        if state is None:
            return None
        layer = copy.deepcopy(self.index).cpu()
        for path, part in _parts(layer):
            key = f"{path}.weight" if path else "weight"
            part.weight = nn.Parameter(state[key].clone())
        layer.load_state_dict(state)
        return layer
