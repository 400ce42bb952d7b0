"""Managed-collision embeddings (zero-collision hashing with eviction), CLI name `zch`.

TorchRec's `MCHManagedCollisionModule` (torchrec 1.8.0, used as is) keeps a sorted map of the ids it
has admitted into Z slots. In training mode each batch is first *profiled* by it (its ids are counted;
every `eviction_interval` batches the map admits new ids, evicting by LFU or LRU when full), then
*remapped* (id -> slot by binary search in the map); in evaluation mode the map is only read. A value
with a slot reads a row of its own: no collisions. A value without one (never seen, evicted, or not
yet admitted) reads its feature's fallback row.

Layout: ONE remapper for all features (unified), not one per feature. A value's id is its fingerprint's
low bits with the feature's position in the top bits, so equal fingerprints of different features are
different ids, a slot's owner is known from its id, and the slots go to the most frequent (LFU) or most
recent (LRU) values of any feature, as the stream decides: no split of rows across features to guess
in advance, and one profile call per batch instead of F. Ids keep 63 - bits(F) bits of the
fingerprint; two values of one feature sharing them (a 2^-56 chance per pair with 100 features) would
share a slot.

Frequency filter (Monolith's, option `min_sightings=N`): a value is offered to the map only from its
N-th sighting on (this batch's included); before that it reads its feature's fallback row. Sightings
are counted in a count-min sketch (depth 2, one uint8 cell per column saturating at N, its width from
`sketch_share` of the budget), not with TorchRec's counts: those exist only for ids already in the map
(LFU) or for one eviction interval's history (what TorchRec's `threshold_filtering_func` sees), while
Monolith counts sightings over the whole stream. A sketch never undercounts, so a value is never
admitted late; hash collisions can admit one early.

New rows: a slot that MCH fills (an empty one or an evicted one) starts from its new owner's fallback
row, what that value read until then. TorchRec leaves the row as it was (its embedding modules' `evict`
is a no-op in 1.8.0), which would hand the old owner's trained vector to the new value. The optimizer's
state of the slot (Adam moments) is not reset.

Bytes (what serving stores, `memory_bytes()`): the rows, (Z - 1 + F) x D float32 (MCH's last slot is
its miss slot: it never holds a value, and misses read the F fallback rows instead); the remapping
table, Z x 3 int64 (the sorted ids, the slot of each, the eviction metadata: LFU counts or LRU last
access); the iteration counter (one int64); the sketch (2 x W bytes). MCH's `_output_segments_tensor`
(1,025 int64 describing row-wise shards) is a constant of Z that the constructor rebuilds: it is left
out of the state_dict, as featmux leaves out every recomputable index buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, unique
from typing import Any

import torch

from featmux.embeddings.base import FeatureEmbedding, TableEmbedding
from featmux.embeddings.budget import FP32_BYTES
from featmux.embeddings.registry import (
    BudgetTarget,
    BudgetUnit,
    EmbeddingMethod,
    VocabularyStats,
    parse_choice,
    register,
)
from featmux.features import CategoricalFeature
from featmux.hashing.mixer import feature_salt, salted_rows, splitmix64
from featmux.sparse import SparseFeatures

SKETCH_DEPTH = 2  # rows of the count-min sketch: at a fixed width, more rows buy little for a 0/1 gate
REMAP_KEYS = 3  # int64 per slot: sorted id, slot of that id, eviction metadata
_EMPTY = (1 << 63) - 1  # MCH's marker of an empty slot (int64 max)
_SEGMENTS = "mch._output_segments_tensor"
INSTALL_HINT = (
    "the zch embedding uses TorchRec's MCHManagedCollisionModule, and TorchRec is not installed: run "
    "`bash scripts/install.sh --torchrec`"
)


class TorchRecMissingError(ImportError, ValueError):
    """TorchRec cannot be imported; the message names the install command.

    An ImportError, and a ValueError so that config validation and the CLI report it in one line.
    """


def _torchrec() -> tuple[Any, Any]:
    """(torchrec.modules.mc_modules, JaggedTensor), or TorchRecMissingError with the install command."""
    try:
        from torchrec.modules import mc_modules
        from torchrec.sparse.jagged_tensor import JaggedTensor
    except ImportError as err:
        raise TorchRecMissingError(f"{INSTALL_HINT} ({err})") from err
    return mc_modules, JaggedTensor


@unique
class Eviction(Enum):
    """Which admitted values MCH evicts when new ones arrive: least frequently or least recently seen."""

    LFU = "lfu"
    LRU = "lru"


@dataclass(frozen=True)
class ZchOptions:
    """Options of the `zch` method (`embedding_options`).

    Args:
        eviction: lfu (TorchRec's `LFU_EvictionPolicy`) or lru (`LRU_EvictionPolicy`).
        eviction_interval: batches between two admission / eviction rounds of the map.
        min_sightings: a value gets its own row only from its N-th sighting on (1: at once).
        sketch_share: the share of the budget spent on the sighting counts when min_sightings > 1.

    Example:
        >>> ZchOptions(eviction="lru", min_sightings=2)
    """

    eviction: Eviction = Eviction.LFU
    eviction_interval: int = 1
    min_sightings: int = 1
    sketch_share: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "eviction", parse_choice(Eviction, self.eviction, "eviction"))
        if self.eviction_interval < 1:
            raise ValueError(f"eviction_interval must be >= 1, got {self.eviction_interval}")
        if not 1 <= self.min_sightings <= 255:
            raise ValueError(f"min_sightings must be in [1, 255] (uint8 counts), got {self.min_sightings}")
        if not 0 < self.sketch_share < 1:
            raise ValueError(f"sketch_share must be in (0, 1), got {self.sketch_share}")


class ZchEmbedding(TableEmbedding):
    """Values admitted by TorchRec's managed-collision map read their own row; the others their
    feature's fallback row.

    Args:
        features: the categorical features.
        embedding_dim: D.
        slots: Z, slots of the map: Z - 1 value rows (MCH keeps its last slot for misses).
        options: eviction policy, interval and the frequency filter.
        sketch_width: W, columns of the sighting sketch (0 without the filter, min_sightings 1).
        device: where to allocate; `meta` allocates nothing and skips initialization.

    Example:
        >>> layer = ZchEmbedding(features, 16, slots=5000, options=ZchOptions(eviction="lru"))
        >>> layer(sparse).shape  # [B, S, 16]; in training mode the batch is profiled first
    """

    method = "zch"

    def __init__(
        self,
        features: Sequence[CategoricalFeature],
        embedding_dim: int,
        slots: int,
        options: ZchOptions,
        sketch_width: int = 0,
        device: torch.device | None = None,
    ) -> None:
        mc, self._jagged = _torchrec()
        if slots < 2:
            raise ValueError(f"zch needs at least 2 slots (one value row and MCH's miss slot), got {slots}")
        if (options.min_sightings > 1) != (sketch_width > 0):
            raise ValueError(
                f"a sketch (width {sketch_width}) is needed exactly when min_sightings > 1 "
                f"({options.min_sightings})"
            )
        self.slots = int(slots)
        self.options = options
        self.sketch_width = int(sketch_width)
        super().__init__(features, embedding_dim, self.slots - 1 + len(features), device)
        order = [*self.univalent, *self.multivalent]
        self.id_shift = 63 - len(order).bit_length()  # feature position above this bit; never int64 max
        self.register_buffer(
            "tags",
            torch.tensor([f << self.id_shift for f in range(len(order))], dtype=torch.int64, device=device),
            persistent=False,
        )
        policy = mc.LFU_EvictionPolicy() if options.eviction is Eviction.LFU else mc.LRU_EvictionPolicy()
        self.mch = mc.MCHManagedCollisionModule(
            zch_size=self.slots,
            device=device or torch.device("cpu"),
            eviction_policy=policy,
            eviction_interval=options.eviction_interval,
        )
        self.register_state_dict_post_hook(_drop_segments)
        self.register_load_state_dict_pre_hook(_restore_segments)
        self.sketch: torch.Tensor | None
        self.register_buffer("sketch", None)  # a None buffer is not stored
        if self.sketch_width:
            self.sketch = torch.zeros(SKETCH_DEPTH, self.sketch_width, dtype=torch.uint8, device=device)
            salts = [feature_salt("zch/sketch", d) for d in range(SKETCH_DEPTH)]
            self.register_buffer(
                "sketch_salts", torch.tensor(salts, dtype=torch.int64, device=device), persistent=False
            )

    # -- ids and rows --------------------------------------------------------------------------------
    def _ids(self, values: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Map ids: the fingerprints' low bits with the feature position in the top bits."""
        return (values & ((1 << self.id_shift) - 1)) | tags

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Table rows of map ids (any shape): the value's slot, or its feature's fallback row.

        The lookup of TorchRec's `remap` (binary search in the sorted ids, then the slot of the match)
        read from the module's own buffers in one `torch.where`: the same slots (tested), without a
        JaggedTensor per call and its boolean-mask writes, and it traces with `torch.export`.
        """
        held = self.mch._mch_sorted_raw_ids
        pos = torch.searchsorted(held[:-1], ids.contiguous())
        miss = self.slots - 1  # MCH's miss slot: misses read their feature's fallback row instead
        return torch.where(
            held[pos] == ids, self.mch._mch_remapped_ids_mapping[pos], miss + (ids >> self.id_shift)
        )

    def univalent_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self._rows(self._ids(ids, self.tags[: len(self.univalent)]))

    def bag_rows(self, index: int, values: torch.Tensor) -> torch.Tensor:
        return self._rows(self._ids(values, self.tags[len(self.univalent) + index])).unsqueeze(1)

    # -- training: profile, admit, refill --------------------------------------------------------------
    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """Embed a batch: [B, F_u] ids and bags -> [B, S, D]; in training mode the map first profiles
        the batch (and may admit and evict), so new values read their new rows in this very batch."""
        self.check_inputs(sparse)
        if self.training and getattr(self, "served", None) is None:
            self.observe(sparse)
        return super().forward(sparse)

    @torch.no_grad()
    def observe(self, sparse: SparseFeatures) -> None:
        """Profile one training batch: count its values, offer the admitted ones to the map, and start
        each slot the map (re)filled from its new owner's fallback row."""
        parts = [self._ids(sparse.ids, self.tags[: len(self.univalent)]).reshape(-1)]
        n = len(self.univalent)
        parts += [self._ids(bag.values, self.tags[n + j]) for j, bag in enumerate(sparse.bags)]
        ids = torch.cat(parts)
        lengths = torch.tensor([ids.numel()], device=ids.device)
        if self.sketch is not None:
            if self.mch._input_history_buffer_size == -1:
                # TorchRec sizes its history from the first batch it profiles and drops what does not
                # fit later; a filtered batch can be any size (the first one empty), so size it from
                # the whole batch, as TorchRec does without a filter
                self.mch._init_history_buffers({"ids": self._jagged(values=ids, lengths=lengths)})
            ids = ids[self._sighted(ids)]
            lengths = torch.tensor([ids.numel()], device=ids.device)
        self.mch.profile({"ids": self._jagged(values=ids, lengths=lengths)})
        filled = self.mch.evict()
        if filled is None or not filled.numel():
            return
        owner = self.slot_ids()[filled]
        filled, owner = filled[owner != _EMPTY], owner[owner != _EMPTY]
        self.weight[filled] = self.weight[self.slots - 1 + (owner >> self.id_shift)]

    def _sighted(self, ids: torch.Tensor) -> torch.Tensor:
        """Count the batch's sightings in the sketch; True where an id has now been seen min_sightings
        times (its estimate: the smallest of its cells, never below the true count)."""
        assert self.sketch is not None
        limit = self.options.min_sightings
        premixed = splitmix64(ids)
        estimate = torch.full_like(ids, limit)
        for d in range(SKETCH_DEPTH):  # over the sketch's rows, not over values
            cells = salted_rows(premixed, self.sketch_salts[d], self.sketch_width)
            unique, counts = torch.unique(cells, return_counts=True)
            row = self.sketch[d]
            row[unique] = (row[unique].long() + counts).clamp_(max=limit).to(torch.uint8)
            estimate = torch.minimum(estimate, row[cells].long())
        return estimate >= limit

    # -- what the map holds -------------------------------------------------------------------------
    def slot_ids(self) -> torch.Tensor:
        """int64 [Z]: the map id each slot holds (int64 max where empty; slot Z - 1 is the miss slot)."""
        held = torch.empty_like(self.mch._mch_sorted_raw_ids)
        held[self.mch._mch_remapped_ids_mapping] = self.mch._mch_sorted_raw_ids
        return held

    def slots_by_feature(self) -> dict[str, int]:
        """How many slots each feature's values hold now."""
        held = self.slot_ids()
        owners = held[held != _EMPTY] >> self.id_shift
        counts = torch.bincount(owners, minlength=len(self.tags)).tolist()
        return {f.name: c for f, c in zip([*self.univalent, *self.multivalent], counts, strict=True)}

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "embedding_dim": self.embedding_dim,
            "slots": self.slots,
            "eviction": self.options.eviction.value,
            "eviction_interval": self.options.eviction_interval,
            "min_sightings": self.options.min_sightings,
            "sketch_share": self.options.sketch_share,
            "sketch_width": self.sketch_width,
        }


def _drop_segments(module: torch.nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    state.pop(prefix + _SEGMENTS, None)


def _restore_segments(module: torch.nn.Module, state: dict[str, Any], prefix: str, *_args: Any) -> None:
    assert isinstance(module, ZchEmbedding)
    state.setdefault(prefix + _SEGMENTS, module.mch._output_segments_tensor)


class ZchMethod(EmbeddingMethod):
    """`zch`: TorchRec's managed-collision map over a table of the budget's rows."""

    name = "zch"
    options = ZchOptions
    above_full_note = "more slots than distinct training values (in a stream they hold values still to come)"

    def parse_options(self, raw: Mapping[str, Any] | Any) -> Any:
        _torchrec()  # a missing TorchRec is reported where the method is named, before any data is read
        return super().parse_options(raw)

    def solve(
        self,
        features: Sequence[CategoricalFeature],
        target: BudgetTarget | None,
        stats: VocabularyStats,
        embedding_dim: int,
        options: ZchOptions,
    ) -> dict[str, Any]:
        assert target is not None
        value, key = target.costs  # one float32 and one int64 in the budget's unit
        row = embedding_dim * value
        width = 0
        if options.min_sightings > 1:
            # one byte per cell; a parameter budget does not count cells, and sizes them as its fp32 bytes
            as_bytes = target.amount * (1 if target.unit is BudgetUnit.BYTES else FP32_BYTES)
            width = int(as_bytes * options.sketch_share) // SKETCH_DEPTH
        cells = SKETCH_DEPTH * width if target.unit is BudgetUnit.BYTES else 0
        # the counter, F fallback rows, the miss slot's keys, then Z - 1 slots of a row and keys each
        free = target.amount - key - len(features) * row - REMAP_KEYS * key - cells
        managed = free // (row + REMAP_KEYS * key)
        if managed < 1 or (options.min_sightings > 1 and width < 1):
            raise ValueError(
                f"a budget of {target} is too small for zch at D={embedding_dim}: {len(features)} "
                f"fallback rows, the map's keys{' and the sketch' if width else ''} leave no value row"
            )
        return {
            "method": self.name,
            "embedding_dim": embedding_dim,
            "slots": int(managed) + 1,
            "eviction": options.eviction.value,
            "eviction_interval": options.eviction_interval,
            "min_sightings": options.min_sightings,
            "sketch_share": options.sketch_share,
            "sketch_width": width,
        }

    def from_config(
        self, features: Sequence[CategoricalFeature], config: Mapping[str, Any], device: torch.device | None
    ) -> FeatureEmbedding:
        options = ZchOptions(
            Eviction(config["eviction"]),
            int(config["eviction_interval"]),
            int(config["min_sightings"]),
            float(config["sketch_share"]),
        )
        return ZchEmbedding(
            features,
            int(config["embedding_dim"]),
            int(config["slots"]),
            options,
            int(config["sketch_width"]),
            device,
        )


register(ZchMethod())
