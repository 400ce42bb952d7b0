"""OptEmbed's three stages on prepared data (`featmux train --embedding optembed`, `run_experiment`).

1. `train_supernet`: the thresholded, width-sampled collisionless supernet (`OptEmbedSupernet`) under
   the model, trained with the run's settings (epochs, early stopping on validation AUC); its
   checkpoints go to `<checkpoint_dir>/supernet`.
2. `search_shape`: the evolutionary search over per-field widths, each candidate scored by the
   supernet's validation AUC at that shape with the rows the thresholds kept, cut to the budget.
3. `retrain_shape`: the found shape as an `OptEmbedEmbedding`, rows and model rewound to the supernet's
   initial weights (lottery-ticket style, as the authors' code), trained again with the same settings.

The model that comes back is the retrained one; its embedding never exceeds the budget.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from featmux.data.cache import EncodedDataset
from featmux.data.prepare import PreparedData
from featmux.embeddings import budget_target
from featmux.embeddings.optembed import (
    OptEmbedEmbedding,
    OptEmbedOptions,
    OptEmbedSupernet,
    SearchResult,
    evolutionary_search,
    fit_rows,
    shape_cost,
)
from featmux.embeddings.registry import BudgetTarget
from featmux.models import CTRModel, build_model
from featmux.training.trainer import FitResult, Trainer, evaluate

if TYPE_CHECKING:
    from featmux.training.experiment import ExperimentConfig

Say = Callable[[str], None]


@dataclass
class Supernet:
    """Stage 1's outcome.

    Args:
        model: the model over the trained supernet.
        layer: the supernet (`model.embedding`).
        initial: the model's state_dict before training (retraining rewinds to it).
        fit: what its training measured.
        counts: per field (slot order), the training counts of its values, in the table's row order.
    """

    model: CTRModel
    layer: OptEmbedSupernet
    initial: dict[str, torch.Tensor]
    fit: FitResult
    counts: list[np.ndarray]


@dataclass(frozen=True)
class Shape:
    """A shape of the served table: per field (slot order) its width and the supernet rows it keeps.

    Args:
        dims: d_f per field.
        kept: per field, the kept value rows' positions among the field's values (ascending).
    """

    dims: tuple[int, ...]
    kept: tuple[np.ndarray, ...]

    @property
    def rows(self) -> list[int]:
        """n_f, kept values per field."""
        return [k.size for k in self.kept]


def train_supernet(
    config: ExperimentConfig, data: PreparedData, say: Say, checkpoint_dir: Path | None
) -> Supernet:
    """Stage 1: build the supernet under `config.model` (seeded by `config.seed`) and train it.

    Args:
        config: the run (`ExperimentConfig`).
        data: the prepared splits and vocabulary.
        say: receives progress lines.
        checkpoint_dir: where its checkpoints go (None: none).
    """
    from featmux.training.experiment import event_logger

    options: OptEmbedOptions = config.embedding_spec().options
    features = data.schema.categorical
    torch.manual_seed(config.seed)
    sizes = {f.name: data.vocabulary.cardinality(f.name, config.min_count) for f in features}
    layer = OptEmbedSupernet(features, config.embedding_dim, sizes, options.threshold_penalty)
    layer.fill_vocabulary(data.vocabulary, config.min_count)
    model = build_model(config.model, layer, len(data.schema.numeric), config.model_options)
    initial = copy.deepcopy(model.state_dict())
    say(f"optembed stage 1: supernet of {layer.table.num_rows:,} rows x {config.embedding_dim}")
    trainer = Trainer(model, config.train_config(), data.schema, checkpoint_dir, on_event=event_logger(say))
    fit = trainer.fit(data.train, data.valid, resume=config.resume)
    counts = [data.vocabulary[f.name].counts for f in (*layer.univalent, *layer.multivalent)]
    return Supernet(model, layer, initial, fit, [c[c >= config.min_count] for c in counts])


def field_margins(layer: OptEmbedSupernet) -> list[np.ndarray]:
    """Per field (slot order), its value rows' ||e||_2 - t_f (the OOV row left out: it is always kept)."""
    margins = layer.row_margins().cpu().numpy()
    starts = layer.table.row_starts.cpu().numpy()
    sizes = [layer.table.vocab_sizes[f.name] for f in (*layer.univalent, *layer.multivalent)]
    return [margins[s + 1 : s + 1 + n] for s, n in zip(starts, sizes, strict=True)]


def shape_at(net: Supernet, dims: tuple[int, ...], target: BudgetTarget) -> Shape:
    """The shape with widths `dims`: each field keeps the rows its threshold kept, the least frequent
    dropped first where they do not all fit (`fit_rows`).

    Raises:
        ValueError: not even one OOV row per field fits at these widths.
    """
    candidates = [np.flatnonzero(m > 0) for m in field_margins(net.layer)]
    priority = [c[i] for c, i in zip(net.counts, candidates, strict=True)]
    counts = fit_rows(priority, dims, target)
    if counts is None:
        raise ValueError(f"widths {dims} do not fit the budget {target}")
    kept = tuple(
        np.sort(i[np.argsort(-p, kind="stable")[:n]])
        for i, p, n in zip(candidates, priority, counts, strict=True)
    )
    return Shape(tuple(dims), kept)


def _keep_mask(layer: OptEmbedSupernet, shape: Shape) -> torch.Tensor:
    starts = layer.table.row_starts.cpu().numpy()
    keep = np.zeros(layer.table.num_rows, dtype=bool)
    keep[starts] = True  # the OOV rows
    for start, kept in zip(starts, shape.kept, strict=True):
        keep[start + 1 + kept] = True
    return torch.from_numpy(keep).to(layer.thresholds.device)


def shape_score(net: Supernet, shape: Shape, valid: EncodedDataset, batch_size: int) -> float:
    """The supernet's validation AUC when it reads `shape` (its widths and kept rows)."""
    net.layer.use_shape(shape.dims, _keep_mask(net.layer, shape))
    try:
        return evaluate(net.model, valid, batch_size).auc
    finally:
        net.layer.use_shape(None)


def search_shape(
    net: Supernet,
    valid: EncodedDataset,
    target: BudgetTarget,
    options: OptEmbedOptions,
    seed: int,
    batch_size: int,
) -> tuple[SearchResult, Shape]:
    """Stage 2: the evolutionary search over per-field widths on the validation split.

    Args:
        net: the trained supernet.
        valid: the validation split (the objective is its AUC).
        target: the budget every candidate is cut to.
        options: the search's settings.
        seed: seeds the search.
        batch_size: evaluation batch size.
    """
    fields = len(net.counts)
    empty = np.zeros(fields, dtype=np.int64)

    def feasible(dims: tuple[int, ...]) -> bool:
        return shape_cost(empty, np.asarray(dims), target) <= target.amount

    def score(dims: tuple[int, ...]) -> float:
        return shape_score(net, shape_at(net, dims, target), valid, batch_size)

    result = evolutionary_search(score, feasible, fields, net.layer.embedding_dim, options, seed)
    return result, shape_at(net, result.dims, target)


def final_layer(net: Supernet, shape: Shape) -> OptEmbedEmbedding:
    """The served layer of `shape`, its rows taken from the supernet's initial (untrained) table."""
    layer = net.layer
    order = [*layer.univalent, *layer.multivalent]
    rows = {f.name: n for f, n in zip(order, shape.rows, strict=True)}
    dims = {f.name: d for f, d in zip(order, shape.dims, strict=True)}
    final = OptEmbedEmbedding(layer.features, layer.embedding_dim, rows, dims)
    keys, starts = layer.table.keys.cpu().numpy(), layer.table.row_starts.cpu().numpy()
    initial = net.initial["embedding.table.weight"]
    key_start = 0
    field_keys = {}
    with torch.no_grad():
        for i, (f, start, kept) in enumerate(zip(order, starts, shape.kept, strict=True)):
            field_keys[f.name] = keys[key_start + kept]  # ascending, as the field's keys are
            key_start += layer.table.vocab_sizes[f.name]
            rows_read = torch.from_numpy(np.concatenate([[start], start + 1 + kept]).astype(np.int64))
            final.tables[i].copy_(initial[rows_read, : shape.dims[i]])  # OOV row first, then the kept values
    final.fill_keys(field_keys)
    return final


def retrain_shape(
    config: ExperimentConfig,
    data: PreparedData,
    net: Supernet,
    shape: Shape,
    say: Say,
    checkpoint_dir: Path | None,
) -> tuple[CTRModel, Trainer, FitResult]:
    """Stage 3: the model over `final_layer(net, shape)`, its dense part rewound to its initial weights,
    trained."""
    from featmux.training.experiment import event_logger

    layer = final_layer(net, shape)
    model = build_model(config.model, layer, len(data.schema.numeric), config.model_options)
    dense = {k: v for k, v in net.initial.items() if not k.startswith("embedding.")}
    missing, unexpected = model.load_state_dict(dense, strict=False)
    if unexpected or any(not k.startswith("embedding.") for k in missing):
        raise RuntimeError(f"the retrained model differs from the supernet's: {unexpected or missing}")
    torch.manual_seed(config.seed)
    trainer = Trainer(model, config.train_config(), data.schema, checkpoint_dir, on_event=event_logger(say))
    return model, trainer, trainer.fit(data.train, data.valid, resume=config.resume)


def train_optembed(
    config: ExperimentConfig, data: PreparedData, say: Say
) -> tuple[CTRModel, Trainer, FitResult, dict[str, Any]]:
    """All three stages; returns the retrained model, its trainer and fit, and a record of the stages.

    Args:
        config: the run (`ExperimentConfig` with embedding optembed).
        data: the prepared splits (a validation split is needed: the search scores on it).
        say: receives progress lines.
    """
    if data.valid is None:
        raise ValueError("optembed searches its field widths on the validation split: the data has none")
    spec = config.embedding_spec()
    options: OptEmbedOptions = spec.options
    target = budget_target(data.schema.categorical, spec, data.vocabulary)
    assert target is not None
    root = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    net = train_supernet(config, data, say, root / "supernet" if root else None)
    thresholds = net.layer.thresholds.detach().cpu().tolist()
    by_thresholds = [int((m > 0).sum()) for m in field_margins(net.layer)]
    say(
        f"optembed stage 2: searching field widths ({options.population} candidates, "
        f"{options.generations} generations)"
    )
    eval_batch = config.train_config().eval_batch_size
    started = time.perf_counter()
    result, shape = search_shape(net, data.valid, target, options, config.seed, eval_batch)
    search_seconds = time.perf_counter() - started
    names = [f.name for f in (*net.layer.univalent, *net.layer.multivalent)]
    say(
        f"optembed: widths {dict(zip(names, result.dims, strict=True))}, "
        f"rows {dict(zip(names, shape.rows, strict=True))} "
        f"(supernet valid AUC {result.score:.5f}, {result.evaluated} candidates scored)"
    )
    say("optembed stage 3: retraining the found shape from the initial weights")
    model, trainer, fit = retrain_shape(config, data, net, shape, say, root)
    record = {
        "supernet": {
            "valid_auc": net.fit.best_valid.auc if net.fit.best_valid else None,
            "steps": net.fit.steps,
            "train_seconds": net.fit.train_seconds,
            "thresholds": dict(zip(names, thresholds, strict=True)),
            "rows_kept_by_thresholds": dict(zip(names, by_thresholds, strict=True)),
            "table_rows": net.layer.table.num_rows,
        },
        "search": {
            **asdict(result),
            "dims": dict(zip(names, result.dims, strict=True)),
            "seconds": search_seconds,
        },
        "rows": dict(zip(names, shape.rows, strict=True)),
    }
    return model, trainer, fit, record
