"""Row optimizers for embedding tables: update only the rows a batch read, with no table-sized gradient.

Dense Adam on a table of R rows reads and writes every row's weight, gradient and two moments at every
step, although a batch touches a few thousand rows: on a 5M-row table that is most of the step time.
`torch.optim.SparseAdam` touches only the looked-up rows, but goes through an uncoalesced sparse
gradient (B x S rows, one per lookup), a coalesce (sort), and about ten sparse/dense round trips.

The optimizers here work with the embedding layers' row-update mode
(`FeatureEmbedding.set_row_updates`): a training forward de-duplicates the batch's rows once
(`torch.unique`), reads them into a small leaf [U, D] and differentiates only that, so backward sums each
row's gradients in a [U, D] buffer. `step()` then gathers the U rows' state, updates it with a handful of
vectorized ops, and scatters weights and state back.

- `RowAdam`: lazy Adam, the same update as `torch.optim.SparseAdam` (moments and weights of untouched
  rows do not move; bias correction uses the global step count), optionally with lazy L2.
- `RowWiseAdagrad`: Adagrad with one accumulator per row (the mean of the squared gradient over the
  row's D entries), as in FBGEMM/TorchRec's `EXACT_ROWWISE_ADAGRAD`: one float of state per row
  instead of 2 D.

Example:
    >>> model.embedding.set_row_updates(True)
    >>> tables = RowAdam(model.embedding.table_modules(), lr=1e-3)
    >>> dense = torch.optim.Adam(model.dense_parameters(), lr=1e-3)
    >>> loss.backward(); tables.step(); dense.step()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from featmux.embeddings.base import RowLookup, TableEmbedding


def merge_lookups(lookups: Sequence[RowLookup]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The distinct rows of `lookups` and each row's summed gradient: ([U], [U, D]), or None if no grad.

    One lookup (the usual case, one forward per step) is returned as is, already distinct; several
    (gradient accumulation, or a layer called twice) are merged with one more `torch.unique`.
    """
    done = [(lk.rows, lk.values.grad) for lk in lookups if lk.values.grad is not None]
    if not done:
        return None
    if len(done) == 1:
        return done[0][0], done[0][1]
    rows, inverse = torch.unique(torch.cat([r for r, _ in done]), return_inverse=True)
    grads = torch.cat([g for _, g in done])
    summed = grads.new_zeros(rows.numel(), grads.shape[1]).index_add_(0, inverse, grads)
    return rows, summed


class _RowOptimizer(torch.optim.Optimizer):
    """Shared plumbing: one param group over the tables' weights; lookups come from the table modules."""

    def __init__(self, tables: Sequence[TableEmbedding], defaults: dict[str, Any]) -> None:
        tables = list(tables)
        if not tables:
            raise ValueError(f"{type(self).__name__} needs at least one table")
        bad = [type(t).__name__ for t in tables if not isinstance(t, TableEmbedding)]
        if bad:
            raise TypeError(f"{type(self).__name__} updates TableEmbedding modules, got {bad}")
        super().__init__([t.weight for t in tables], defaults)
        self._tables = tables
        for table in tables:
            table._row_updates = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop lookups recorded since the last step (their gradients are stale)."""
        super().zero_grad(set_to_none)
        for table in self._tables:
            table.take_lookups()

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """Update the rows each table read since the last step (tables that read nothing are skipped)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for table, weight in zip(self._tables, group["params"], strict=True):
                merged = merge_lookups(table.take_lookups())
                if merged is not None:
                    self._update(weight, merged[0], merged[1], group)
        return loss

    def _update(
        self, weight: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]
    ) -> None:
        raise NotImplementedError


class RowAdam(_RowOptimizer):
    """Lazy Adam on embedding rows: `torch.optim.SparseAdam`'s update without a sparse gradient.

    For each distinct row r read in the step, with g its summed gradient (plus `weight_decay * w_r`):

        m_r = b1 m_r + (1 - b1) g;   v_r = b2 v_r + (1 - b2) g^2
        w_r -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m_r / (sqrt(v_r) + eps)

    where t counts the optimizer's steps. Rows not read keep their weights and moments.

    Args:
        tables: the table modules to update (`FeatureEmbedding.table_modules()`); they are switched to
            row-update mode.
        lr: learning rate.
        betas: (b1, b2).
        eps: added to sqrt(v).
        weight_decay: lazy L2: lambda * w_r is added to the gradient of the rows read.

    Example:
        >>> opt = RowAdam(model.embedding.table_modules(), lr=1e-3)
    """

    def __init__(
        self,
        tables: Sequence[TableEmbedding],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid RowAdam options lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(tables, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _update(
        self, weight: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]
    ) -> None:
        state = self.state[weight]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)  # a CPU scalar, as in torch.optim.Adam
            # m and v of a row side by side: one gather and one scatter serve both
            state["moments"] = weight.new_zeros(weight.shape[0], 2, weight.shape[1])
        state["step"] += 1
        t = float(state["step"])
        beta1, beta2 = group["betas"]
        w = weight.index_select(0, rows)  # [U, D]
        if group["weight_decay"]:
            grad = grad.add(w, alpha=group["weight_decay"])
        moments = state["moments"].index_select(0, rows)  # [U, 2, D]
        m, v = moments[:, 0], moments[:, 1]
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        state["moments"].index_copy_(0, rows, moments)
        step_size = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        w.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
        weight.index_copy_(0, rows, w)


class RowWiseAdagrad(_RowOptimizer):
    """Row-wise Adagrad: one accumulator per row, the running sum of the row's mean squared gradient.

        a_r += mean(g^2);   w_r -= lr * g / (sqrt(a_r) + eps)

    Args:
        tables: the table modules to update; they are switched to row-update mode.
        lr: learning rate (row-wise Adagrad usually wants a larger one than Adam, e.g. 0.01-0.1).
        eps: added to sqrt(a).
        weight_decay: lazy L2 on the rows read.
        initial_accumulator: starting value of every accumulator.

    Example:
        >>> opt = RowWiseAdagrad(model.embedding.table_modules(), lr=0.05)
    """

    def __init__(
        self,
        tables: Sequence[TableEmbedding],
        lr: float = 0.05,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        initial_accumulator: float = 0.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or initial_accumulator < 0:
            raise ValueError(f"invalid RowWiseAdagrad options lr={lr} eps={eps} wd={weight_decay}")
        defaults = {
            "lr": lr,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator": initial_accumulator,
        }
        super().__init__(tables, defaults)

    def _update(
        self, weight: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]
    ) -> None:
        state = self.state[weight]
        if not state:
            state["sum"] = weight.new_full((weight.shape[0],), group["initial_accumulator"])
        w = weight.index_select(0, rows)  # [U, D]
        if group["weight_decay"]:
            grad = grad.add(w, alpha=group["weight_decay"])
        acc = state["sum"].index_select(0, rows).add_(grad.square().mean(dim=1))  # [U]
        state["sum"].index_copy_(0, rows, acc)
        w.addcdiv_(grad, acc.sqrt().add_(group["eps"]).unsqueeze(1), value=-group["lr"])
        weight.index_copy_(0, rows, w)
