"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018).

Target attention: each behaviour in a user's history is weighted by an MLP over (target, behaviour,
target - behaviour, target * behaviour), and the weighted sum (not softmax-normalized, as in the
paper) replaces the plain pooled history. The history comes as aligned multivalent features (e.g.
`hist_item_id`, `hist_genres` from `featmux.data.sequences`), read unpooled with `bag_vectors`. A
history feature that shares its target's rows (`CategoricalFeature.share_with`, the MovieLens default)
gives a movie the same vector as behaviour and as candidate, and both train those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.base import CTRModel, config_dict, slots_of
from featmux.models.layers import MLP
from featmux.sparse import SparseFeatures


@dataclass(frozen=True)
class DINConfig:
    """Args:
    target: features of the candidate item, forming the attention query (in this order).
    history: aligned multivalent history features, one per target feature (the same order).
    attention_hidden: hidden widths of the attention MLP.
    hidden: widths of the MLP over [every slot but the history's, attended history, dense].
    dropout: dropout of that MLP.
    batch_norm: batch norm in that MLP.
    """

    target: tuple[str, ...] = ("item_id", "genres")
    history: tuple[str, ...] = ("hist_item_id", "hist_genres")
    attention_hidden: tuple[int, ...] = (80, 40)
    hidden: tuple[int, ...] = (200, 80)
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if not self.target or len(self.target) != len(self.history):
            raise ValueError(
                f"DIN needs one history feature per target feature, got target {list(self.target)} "
                f"and history {list(self.history)}"
            )


class DIN(CTRModel):
    """Attention-pooled behaviour history, beside the other slots, into an MLP.

    The MLP reads every slot except the history's own (mean-pooled) slots, plus the attended history.

    Args:
        embedding: any embedding layer whose features include `config.target` and `config.history`.
        num_dense: N numeric features.
        config: the target and history features and the MLP shapes.

    Example:
        >>> model = DIN(embedding, 0, DINConfig(target=("item_id",), history=("hist_item_id",)))
    """

    name = "din"

    def __init__(self, embedding: FeatureEmbedding, num_dense: int, config: DINConfig | None = None) -> None:
        super().__init__(embedding, num_dense)
        self.config = c = config or DINConfig()
        query: list[int] = []
        for target, history in zip(c.target, c.history, strict=True):
            embedding.bag_index(history)  # raises unless the history is a multivalent feature
            t_slots, h_slots = slots_of(embedding, [target]), slots_of(embedding, [history])
            if len(t_slots) != len(h_slots):
                raise ValueError(
                    f"target {target!r} has {len(t_slots)} chunk(s) but its history {history!r} has "
                    f"{len(h_slots)}: give both the same chunks (or let the history share the target's rows)"
                )
            query += t_slots
        history_slots = set(slots_of(embedding, c.history))
        other = [i for i in range(embedding.num_slots) if i not in history_slots]
        self.register_buffer("query_slots", torch.tensor(query, dtype=torch.int64), persistent=False)
        self.register_buffer("other_slots", torch.tensor(other, dtype=torch.int64), persistent=False)
        width = len(query) * embedding.embedding_dim  # E: query and behaviour width
        self.attention = MLP(4 * width, c.attention_hidden)
        self.attention_head = nn.Linear(self.attention.output_dim, 1)
        self.mlp = MLP(
            len(other) * embedding.embedding_dim + width + num_dense, c.hidden, c.dropout, c.batch_norm
        )
        self.head = nn.Linear(self.mlp.output_dim, 1)

    def attend(self, sparse: SparseFeatures, query: torch.Tensor) -> torch.Tensor:
        """The attention-weighted sum of each row's behaviours: query [B, E] -> [B, E] (0 without history)."""
        bags = [sparse.bags[self.embedding.bag_index(h)] for h in self.config.history]
        offsets = bags[0].offsets  # [B + 1]
        for h, bag in zip(self.config.history[1:], bags[1:], strict=True):
            if not torch.equal(bag.offsets, offsets):
                raise ValueError(f"history {h!r} is not aligned with {self.config.history[0]!r}")
        keys = torch.cat(
            [
                self.embedding.bag_vectors(h, b.values).flatten(1)
                for h, b in zip(self.config.history, bags, strict=True)
            ],
            dim=1,
        )  # [L, E], every behaviour of the batch
        rows = torch.repeat_interleave(
            torch.arange(offsets.numel() - 1, device=offsets.device), offsets.diff()
        )
        q = query.index_select(0, rows)  # [L, E], each behaviour's target
        scores = self.attention_head(
            self.attention(torch.cat([q, keys, q - keys, q * keys], dim=1))
        )  # [L, 1]
        return query.new_zeros(query.shape).index_add_(0, rows, scores * keys)  # [B, E]

    def forward(self, sparse: SparseFeatures, dense: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(sparse)  # [B, S, D]
        query = emb.index_select(1, self.query_slots).flatten(1)  # [B, E]
        parts = [emb.index_select(1, self.other_slots).flatten(1), self.attend(sparse, query)]
        if self.num_dense:
            parts.append(dense)
        return self.head(self.mlp(torch.cat(parts, dim=1))).squeeze(1)

    def model_config(self) -> dict[str, Any]:
        return config_dict(self.config)
