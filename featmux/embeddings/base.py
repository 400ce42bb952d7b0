"""The one interface every embedding method implements, and the table lookup they share.

Every method maps the categorical features of a batch to S embedding slots of width D:

    forward(SparseFeatures) -> Tensor [B, S, D]

A feature contributes one slot per chunk (K_f probes in Unified Embedding, 1 elsewhere); models see
only slots, so any method fits any model. Slots come in a fixed order: the univalent features in the
order they were given, then the multivalent ones (their bags pooled), then any extra slots a method
adds (Unified Embedding's private tables). `slot_names` lists them as `feature#chunk`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from featmux.features import CategoricalFeature, Pooling
from featmux.sparse import SparseFeatures

INIT_STD = 0.01  # N(0, 0.01^2): small enough that early dot products (FM, cross layers) stay tame


class FeatureEmbedding(nn.Module, ABC):
    """Base class of embedding methods: categorical features -> [B, S, D].

    Args:
        features: the categorical features, in the order of the schema they come from.
        embedding_dim: D, the width of one slot.
    """

    method: str = ""

    def __init__(self, features: Sequence[CategoricalFeature], embedding_dim: int) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if not features:
            raise ValueError("an embedding layer needs at least one feature")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        self.features: tuple[CategoricalFeature, ...] = tuple(features)
        self.embedding_dim = embedding_dim
        self.univalent = tuple(f for f in self.features if not f.multivalent)
        self.multivalent = tuple(f for f in self.features if f.multivalent)

    @abstractmethod
    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch.

        Args:
            sparse: ids [B, F_u] and one bag per multivalent feature, in this layer's feature order.

        Returns:
            Tensor [B, S, D].
        """

    def check_inputs(self, sparse: SparseFeatures) -> None:
        """Raise ValueError unless `sparse` has this layer's univalent id columns and bags."""
        if sparse.ids.shape[1] != len(self.univalent) or len(sparse.bags) != len(self.multivalent):
            raise ValueError(
                f"{type(self).__name__} expects {len(self.univalent)} univalent id columns and "
                f"{len(self.multivalent)} bags, got {sparse.ids.shape[1]} and {len(sparse.bags)}"
            )

    @property
    @abstractmethod
    def slot_names(self) -> tuple[str, ...]:
        """Names of the S output slots, `feature#chunk`, in output order."""

    def bag_vectors(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """The vectors of a multivalent feature's values, not pooled (for sequence models such as DIN).

        Args:
            name: a multivalent feature of this layer.
            values: int64 [L] fingerprints (e.g. `Bag.values`).

        Returns:
            Tensor [L, K, D]: the K chunk vectors each value reads.
        """
        raise NotImplementedError(f"{type(self).__name__} has no unpooled lookup of bag values")

    def bag_index(self, name: str) -> int:
        """Position of multivalent feature `name` in `SparseFeatures.bags`."""
        for j, f in enumerate(self.multivalent):
            if f.name == name:
                return j
        raise ValueError(
            f"{name!r} is not a multivalent feature of this layer: {[f.name for f in self.multivalent]}"
        )

    @property
    def num_slots(self) -> int:
        return len(self.slot_names)

    @property
    def output_dim(self) -> int:
        """S * D: width of the flattened output."""
        return self.num_slots * self.embedding_dim

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Plain values that rebuild this layer with `featmux.embeddings.embedding_from_config`."""

    def num_parameters(self) -> int:
        """Exact count of trainable parameters (table cells), from the tensors themselves."""
        return sum(p.numel() for p in self.parameters())

    def memory_bytes(self) -> int:
        """Bytes stored to serve: every tensor of the state_dict, numel x element size.

        That is the parameters and the persistent buffers (a vocabulary's fingerprints, quantization
        scales, hash constants). Index buffers that the constructor recomputes from `config()` (salts,
        sub-table bounds) are not stored and not counted.
        """
        tensors = {id(t): t for t in self.state_dict(keep_vars=True).values()}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def serving_bytes(self) -> int:
        """Bytes of the form this layer is served in; budgets count these.

        The same as `memory_bytes()` unless the layer trains float master rows for a smaller served
        form (Unified Embedding with `qat_bits` counts its int8 / int4 tables).
        """
        return self.memory_bytes()

    def table_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive sparse gradients when `set_sparse_gradients(True)`."""
        return []

    def auxiliary_loss(self) -> torch.Tensor | None:
        """A term the trainer adds to each training loss (OptEmbed's threshold penalty); None: none."""
        return None

    def set_sparse_gradients(self, enabled: bool) -> None:
        """Produce sparse gradients for the tables (for a sparse optimizer such as SparseAdam)."""
        for module in self.modules():
            if isinstance(module, TableEmbedding):
                module._sparse = enabled

    def table_modules(self) -> list[TableEmbedding]:
        """The `TableEmbedding` modules holding this layer's tables (itself, or its parts)."""
        return [m for m in self.modules() if isinstance(m, TableEmbedding)]

    def set_row_updates(self, enabled: bool) -> None:
        """Record each training lookup's distinct rows for a row optimizer (`featmux.training.optim`).

        When enabled, a forward pass with gradients reads each distinct row of the batch once into a
        small leaf tensor [U, D] and differentiates only that; the tables themselves get no `.grad`. A
        row optimizer then updates exactly those U rows (see `TableEmbedding.take_lookups`).
        """
        for table in self.table_modules():
            table._row_updates = enabled
            table._lookups.clear()

    def set_quantization_aware(self, levels: int) -> None:
        """Read every table row fake-quantized to `levels` steps (255: int8, 15: int4; 0: off).

        Quantization-aware training: the model trains and validates on the rows that row-wise
        quantization will serve (`fake_quantize_rows`), gradients passing straight through.
        """
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        tables = self.table_modules()
        if levels and not tables:
            raise ValueError(
                f"quantization-aware training needs table layers; {type(self).__name__} has none"
            )
        for table in tables:
            table._qat_levels = levels


def fake_quantize_rows(rows: torch.Tensor, levels: int) -> torch.Tensor:
    """Rows [..., D] rounded to `levels` + 1 steps between their own min and max, gradients straight through.

    What row-wise quantization (`featmux.embeddings.precision`) will store, so that quantization-aware
    training learns rows that survive it; the backward pass is the identity (straight-through estimator).
    """
    x = rows.detach()
    lo = x.amin(dim=-1, keepdim=True)
    # the stored float16 scale and bias, exactly as the served rows use them
    step = ((x.amax(dim=-1, keepdim=True) - lo) / levels).half().float()
    bias = lo.half().float()
    code = torch.round((x - bias) / nonzero_step(step)).clamp_(0, levels)
    return rows + (bias + step * code - x)


def nonzero_step(step: torch.Tensor) -> torch.Tensor:
    """Quantization steps with 0 (a constant row) replaced by 1: the divisor of codes = (x - bias) / step.

    Small steps stay as they are (float16 subnormals included): the rows are rebuilt as bias + step * code
    with the same step, so dividing by anything else would give codes that rebuild other values.
    """
    return torch.where(step > 0, step, torch.ones_like(step))


def embed_rows(
    table: TableEmbedding, sparse: SparseFeatures, read: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """`TableEmbedding.forward` with each looked-up row produced by `read(rows) -> [..., D]`.

    Bags read every value's rows, then pool (what a serving form or quantization-aware training needs:
    the row must be formed before pooling).
    """
    parts = []
    if table.univalent:
        parts.append(read(table.univalent_rows(sparse.ids)))  # [B, S_u, D]
    for j, (feature, bag) in enumerate(zip(table.multivalent, sparse.bags, strict=True)):
        rows = table.bag_rows(j, bag.values)  # [L, K]
        num_values, chunks = rows.shape
        vectors = read(rows.t().reshape(-1))  # [K * L, D], chunk-major
        pooled = F.embedding_bag(
            torch.arange(vectors.shape[0], device=vectors.device),
            vectors,
            _chunk_offsets(bag.offsets, num_values, chunks),
            mode=feature.pooling.value,
            include_last_offset=True,
        )  # [K * B, D]
        parts.append(pooled.view(chunks, bag.offsets.numel() - 1, -1).transpose(0, 1))  # [B, K, D]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, S, D]


class RowLookup(NamedTuple):
    """The distinct rows that one training forward pass read from a table, for a row optimizer.

    Args:
        rows: int64 [U], distinct table rows, ascending.
        values: float [U, D], a leaf copy of those rows that the lookup read; after backward its `.grad`
            holds each row's summed gradient.
    """

    rows: torch.Tensor
    values: torch.Tensor


class _GatherRows(torch.autograd.Function):
    """values[index] with a backward that sums into [U, D] by `index_add_`.

    Autograd's own embedding backward (`embedding_dense_backward`) is several times slower on CPU for
    the [B * S] -> [U] reduction of a training batch.
    """

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = values.shape[0]
        return values.index_select(0, index.reshape(-1)).view(*index.shape, values.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])  # [N, D]
        return flat.new_zeros(ctx.num_rows, flat.shape[1]).index_add_(0, index.reshape(-1), flat), None


def _chunk_offsets(offsets: torch.Tensor, num_values: int, chunks: int) -> torch.Tensor:
    """CSR offsets of `chunks` stacked copies of a bag batch: [B + 1] -> [chunks * B + 1]."""
    starts = offsets[:-1].unsqueeze(0) + num_values * torch.arange(chunks, device=offsets.device).unsqueeze(1)
    end = offsets.new_full((1,), chunks * num_values)
    return torch.cat([starts.reshape(-1), end])


class TableEmbedding(FeatureEmbedding):
    """A method that reads rows of one [R, D] table: subclasses say which rows, this class reads them.

    Args:
        features: the categorical features.
        embedding_dim: D.
        num_rows: R, rows of the table.
        device: where to allocate the table; `meta` allocates nothing and skips initialization.
    """

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        num_rows: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(features, embedding_dim)
        if num_rows < 1:
            raise ValueError(f"{type(self).__name__} needs at least one row, got {num_rows}")
        self.weight = nn.Parameter(torch.empty(num_rows, embedding_dim, device=device))
        self._sparse = False
        self._row_updates = False
        self._qat_levels = 0
        self._lookups: list[RowLookup] = []
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.device.type == "meta":
            return
        nn.init.normal_(self.weight, std=INIT_STD)

    @property
    def num_rows(self) -> int:
        """R, rows of the table (also once a serving form has replaced its weight)."""
        served = getattr(self, "served", None)
        return self.weight.shape[0] if served is None else served.num_rows

    def table_parameters(self) -> list[nn.Parameter]:
        # a table in a serving form (featmux.embeddings.served) has no weight: nothing trains
        return [self.weight] if getattr(self, "served", None) is None else []

    def chunks_of(self, feature: CategoricalFeature) -> int:
        """K_f, the number of slots (probes) of a feature."""
        return 1

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(
            f"{f.name}#{c}" for f in (*self.univalent, *self.multivalent) for c in range(self.chunks_of(f))
        )

    @abstractmethod
    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows read for the univalent features: ids [B, F_u] -> rows [B, S_u] (int64)."""

    @abstractmethod
    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        """Rows read for multivalent feature `index`: values [L] -> rows [L, K]."""

    def _pool(self, rows: torch.Tensor, offsets: torch.Tensor, pooling: Pooling) -> torch.Tensor:
        num_values, chunks = rows.shape
        batch = offsets.numel() - 1
        pooled = F.embedding_bag(
            rows.t().reshape(-1),  # [K * L], chunk-major
            self.weight,
            _chunk_offsets(offsets, num_values, chunks),
            mode=pooling.value,
            sparse=self._sparse,
            include_last_offset=True,
        )  # [K * B, D]
        return pooled.view(chunks, batch, -1).transpose(0, 1)  # [B, K, D]

    def bag_vectors(self, name: str, values: torch.Tensor) -> torch.Tensor:
        rows = self.bag_rows(self.bag_index(name), values)  # [L, K]
        if self._row_updates and self.weight.requires_grad and torch.is_grad_enabled():
            unique, inverse = torch.unique(rows, return_inverse=True)
            leaf = self.weight.detach().index_select(0, unique).requires_grad_()  # [U, D]
            self._lookups.append(RowLookup(unique, leaf))
            return _GatherRows.apply(self._soft_threshold(leaf, unique), inverse)  # [L, K, D]
        return self._soft_threshold(F.embedding(rows, self.weight, sparse=self._sparse), rows)  # [L, K, D]

    def _soft_threshold(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Rows [..., D] (table rows `rows` [...]) through PEP's learned soft threshold, if the table has one.

        `featmux.embeddings.pep` attaches it as `self.pep`; without it the rows are returned as they are.
        """
        pep = getattr(self, "pep", None)
        return values if pep is None else pep(values, rows)

    def _read_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows [..., D] as training reads them: soft-thresholded (PEP), then fake-quantized (QAT)."""
        values = self._soft_threshold(F.embedding(rows, self.weight, sparse=self._sparse), rows)
        return fake_quantize_rows(values, self._qat_levels) if self._qat_levels else values

    def take_lookups(self) -> list[RowLookup]:
        """The lookups recorded since the last call (row-update mode), oldest first; clears them."""
        lookups, self._lookups = self._lookups, []
        return lookups

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D]."""
        self.check_inputs(sparse)
        served = getattr(self, "served", None)  # a serving form (featmux.embeddings.served)
        if served is not None:
            return served.embed(self, sparse)
        if self._row_updates and self.weight.requires_grad and torch.is_grad_enabled():
            return self._forward_rows(sparse)
        if self._qat_levels or getattr(self, "pep", None) is not None:
            return embed_rows(self, sparse, self._read_rows)  # each row transformed before pooling
        parts = []
        if self.univalent:
            parts.append(F.embedding(self.univalent_rows(sparse.ids), self.weight, sparse=self._sparse))
        for j, (feature, bag) in enumerate(zip(self.multivalent, sparse.bags, strict=True)):
            parts.append(self._pool(self.bag_rows(j, bag.values), bag.offsets, feature.pooling))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, S, D]

    def _forward_rows(self, sparse: SparseFeatures) -> torch.Tensor:
        """Training forward in row-update mode: each distinct row is read once into a leaf [U, D].

        The rows of all slots (univalent and bags) are de-duplicated together, so backward sums a row's
        gradients in a small [U, D] buffer instead of a [R, D] table or an uncoalesced sparse tensor.
        """
        flat = []
        if self.univalent:
            uni = self.univalent_rows(sparse.ids)  # [B, S_u]
            flat.append(uni.reshape(-1))
        bag_rows = [self.bag_rows(j, bag.values) for j, bag in enumerate(sparse.bags)]  # [L_j, K_j]
        flat += [r.t().reshape(-1) for r in bag_rows]  # chunk-major, as `_pool` reads them
        rows, inverse = torch.unique(flat[0] if len(flat) == 1 else torch.cat(flat), return_inverse=True)
        leaf = self.weight.detach().index_select(0, rows).requires_grad_()  # [U, D]
        self._lookups.append(RowLookup(rows, leaf))
        values = self._soft_threshold(leaf, rows)
        values = fake_quantize_rows(values, self._qat_levels) if self._qat_levels else values
        parts, start = [], 0
        if self.univalent:
            parts.append(_GatherRows.apply(values, inverse[: uni.numel()].view(uni.shape)))  # [B, S_u, D]
            start = uni.numel()
        for feature, bag, r in zip(self.multivalent, sparse.bags, bag_rows, strict=True):
            num_values, chunks = r.shape
            pooled = F.embedding_bag(
                inverse[start : start + r.numel()],
                values,
                _chunk_offsets(bag.offsets, num_values, chunks),
                mode=feature.pooling.value,
                include_last_offset=True,
            )  # [K * B, D]
            start += r.numel()
            parts.append(pooled.view(chunks, bag.offsets.numel() - 1, -1).transpose(0, 1))  # [B, K, D]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, S, D]


class ValueEmbedding(FeatureEmbedding):
    """A method that computes each value's vector itself (from hashed parts, factors or an MLP).

    Subclasses implement `embed`; this class applies it to the univalent columns at once and to each
    bag's values, then pools every bag (mean or sum) over its own values. One slot per feature.

    Args:
        features: the categorical features.
        embedding_dim: D.
    """

    @abstractmethod
    def embed(self, values: torch.Tensor, index: slice | int) -> torch.Tensor:
        """Vectors of values: [N, F'] for the features `index` (a slice of the slot order) or [L] for
        one feature (an int) -> [N, F', D] or [L, D]."""

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(f"{f.name}#0" for f in (*self.univalent, *self.multivalent))

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, F, D]."""
        self.check_inputs(sparse)
        n = len(self.univalent)
        parts = [self.embed(sparse.ids, slice(0, n))] if n else []  # [B, F_u, D]
        for k, (feature, bag) in enumerate(zip(self.multivalent, sparse.bags, strict=True)):
            vectors = self.embed(bag.values, n + k)  # [L, D]
            position = torch.arange(vectors.shape[0], device=vectors.device)
            pooled = F.embedding_bag(
                position, vectors, bag.offsets, mode=feature.pooling.value, include_last_offset=True
            )  # [B, D]
            parts.append(pooled.unsqueeze(1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, F, D]
