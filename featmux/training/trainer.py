"""The training loop: optimizers, early stopping on validation AUC, checkpoints and resume.

Models stay pure modules; the Trainer owns everything around them. Resumable state (model,
optimizers, RNG, position in the data stream, early-stopping counters) is written atomically to
`<checkpoint_dir>/last.pt`; the best model by validation AUC to `<checkpoint_dir>/best.pt`. A run
restarted with the same data, config and directory continues where it stopped and ends with the
same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from featmux.data.cache import Batch, EncodedDataset
from featmux.features import Schema
from featmux.models import CTRModel
from featmux.training.checkpoint import FORMAT_VERSION, atomic_save, model_spec, safe_load, save_model
from featmux.training.config import OptimizerKind, TrainConfig
from featmux.training.metrics import Metrics, binary_metrics


@torch.no_grad()
def predict(
    model: CTRModel, dataset: EncodedDataset, batch_size: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits) over a whole dataset, in its stored order."""
    was_training = model.training
    model.eval()
    labels, logits = [], []
    for batch in dataset.batches(batch_size):
        logits.append(model(batch.sparse, batch.dense).float().numpy())
        labels.append(batch.labels.numpy())
    model.train(was_training)
    if not labels:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(logits)


def evaluate(model: CTRModel, dataset: EncodedDataset, batch_size: int = 16384) -> Metrics:
    """AUC and logloss of `model` on `dataset`."""
    return binary_metrics(*predict(model, dataset, batch_size))


@dataclass
class TrainState:
    """Where training stands; saved in every resumable checkpoint."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_auc: float = float("-inf")
    best_step: int = -1
    bad_evals: int = 0
    learning_rate: float = 0.0
    train_seconds: float = 0.0
    train_rows: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: bool = False


@dataclass(frozen=True)
class FitResult:
    """What `Trainer.fit` measured."""

    best_valid: Metrics | None
    best_step: int
    steps: int
    epochs: float
    train_seconds: float
    samples_per_second: float
    history: list[dict[str, float]]


def _embedding_l2(params: list[torch.nn.Parameter], weight: float) -> None:
    """Add the gradient of weight/2 * ||w||^2: all rows for dense grads, looked-up rows for sparse ones."""
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            grad = p.grad.coalesce()
            rows = grad.indices()[0]
            p.grad = torch.sparse_coo_tensor(
                grad.indices(), grad.values() + weight * p.detach()[rows], grad.shape, check_invariants=False
            )
        else:
            p.grad.add_(p.detach(), alpha=weight)


class Trainer:
    """Trains a CTR model with early stopping and resumable checkpoints.

    Args:
        model: the model to train (its embedding layer decides what is sparse).
        config: training options.
        schema: the data schema, stored in checkpoints so models rebuild without the training code.
        checkpoint_dir: where `last.pt` / `best.pt` go (None: keep the best weights in memory only).
        on_event: optional callback receiving dicts such as {"event": "eval", "step": ..., "valid_auc": ...}.

    Example:
        >>> trainer = Trainer(model, TrainConfig(epochs=5), schema, checkpoint_dir=Path("runs/a"))
        >>> result = trainer.fit(train, valid)
    """

    def __init__(
        self,
        model: CTRModel,
        config: TrainConfig,
        schema: Schema,
        checkpoint_dir: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.schema = schema
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.on_event = on_event
        self.state = TrainState(learning_rate=config.learning_rate)
        self._tables = model.embedding.table_parameters()
        self._best_state: dict[str, torch.Tensor] | None = None
        sparse = config.optimizer is OptimizerKind.SPARSE_ADAM
        model.embedding.set_sparse_gradients(sparse)
        dense_params = model.dense_parameters()
        self.optimizers: list[torch.optim.Optimizer] = []
        if sparse:
            if self._tables:
                self.optimizers.append(torch.optim.SparseAdam(self._tables, lr=config.learning_rate))
            if dense_params:
                self.optimizers.append(torch.optim.Adam(dense_params, lr=config.learning_rate))
        else:
            self.optimizers.append(torch.optim.Adam(list(model.parameters()), lr=config.learning_rate))
        self._dense_params = dense_params

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path | None:
        return self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None

    @property
    def best_path(self) -> Path | None:
        return self.checkpoint_dir / "best.pt" if self.checkpoint_dir else None

    def _save_last(self) -> None:
        if self.last_path is None:
            return
        payload = {
            "featmux_format": FORMAT_VERSION,
            "spec": model_spec(self.model, self.schema),
            "state": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "train_state": asdict(self.state),
            "torch_rng": torch.get_rng_state(),
            "config": {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(self.config).items()},
        }
        previous = self.last_path.with_suffix(".prev.pt")
        if self.last_path.exists():
            self.last_path.replace(previous)  # keep one older good checkpoint to fall back on
        atomic_save(payload, self.last_path)

    def _load_last(self) -> bool:
        """Restore from last.pt (or, if it is damaged, the previous one). True if something was restored."""
        assert self.last_path is not None
        candidates = [self.last_path, self.last_path.with_suffix(".prev.pt")]
        errors = []
        for path in candidates:
            if not path.exists():
                continue
            try:
                payload = safe_load(path)
            except Exception as err:
                errors.append(str(err))
                continue
            self.model.load_state_dict(payload["state"])
            for opt, sd in zip(self.optimizers, payload["optimizers"], strict=True):
                opt.load_state_dict(sd)
            self.state = TrainState(**payload["train_state"])
            torch.set_rng_state(payload["torch_rng"])
            self._set_lr(self.state.learning_rate)
            if self.best_path is not None and self.best_path.exists():
                self._best_state = safe_load(self.best_path)["state"]
            self._emit(
                {"event": "resumed", "from": str(path), "step": self.state.step, "skipped_damaged": errors}
            )
            return True
        if errors:
            raise RuntimeError("no usable checkpoint to resume from: " + "; ".join(errors))
        return False

    # -- loop ----------------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _set_lr(self, lr: float) -> None:
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def _step(self, batch: Batch) -> float:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        logits = self.model(batch.sparse, batch.dense)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        loss.backward()
        if self.config.embedding_l2 > 0:
            _embedding_l2(self._tables, self.config.embedding_l2)
        if self.config.max_grad_norm is not None and self._dense_params:
            torch.nn.utils.clip_grad_norm_(self._dense_params, self.config.max_grad_norm)
        for opt in self.optimizers:
            opt.step()
        return float(loss.detach())

    def _evaluate(self, valid: EncodedDataset | None) -> None:
        s = self.state
        record: dict[str, float] = {
            "step": s.step,
            "epoch": s.epoch + s.batch_in_epoch / max(1, self._batches),
        }
        if valid is None:
            self._best_state = None
            s.best_step = s.step
            s.history.append(record)
            return
        metrics = evaluate(self.model, valid, self.config.eval_batch_size)
        record.update(metrics.as_dict("valid_"))
        record["learning_rate"] = s.learning_rate
        s.history.append(record)
        if metrics.auc > s.best_auc:
            s.best_auc, s.best_step, s.bad_evals = metrics.auc, s.step, 0
            self._best_state = copy.deepcopy(self.model.state_dict())
            if self.best_path is not None:
                save_model(self.best_path, self.model, self.schema, {"valid": metrics.as_dict()})
        else:
            s.bad_evals += 1
            if s.bad_evals >= self.config.patience:
                s.stopped = True
            elif self.config.lr_decay < 1:
                s.learning_rate *= self.config.lr_decay
                self._set_lr(s.learning_rate)
        self._emit({"event": "eval", **record, "best_auc": s.best_auc})

    def fit(
        self, train: EncodedDataset, valid: EncodedDataset | None = None, resume: bool = True
    ) -> FitResult:
        """Train until `epochs`, `max_steps` or early stopping; the model ends with the best weights.

        Args:
            train: training split.
            valid: validation split for early stopping (None: train all epochs, keep the last weights).
            resume: continue from `checkpoint_dir/last.pt` if it exists.
        """
        c = self.config
        if c.threads is not None:
            torch.set_num_threads(c.threads)
        self._batches = train.num_batches(c.batch_size)
        if not (resume and self.last_path is not None and self._load_last()):
            torch.manual_seed(c.seed)
        s = self.state
        self.model.train()
        bar = tqdm(
            total=c.epochs * self._batches
            if c.max_steps is None
            else min(c.max_steps, c.epochs * self._batches),
            initial=s.step,
            unit="batch",
            disable=not c.progress,
            dynamic_ncols=True,
            leave=False,
        )
        while not s.stopped and s.epoch < c.epochs:
            batches = train.batches(
                c.batch_size, shuffle=True, seed=c.seed, epoch=s.epoch, start_batch=s.batch_in_epoch
            )
            while not s.stopped:
                started = time.perf_counter()  # train time counts data loading and steps, not evaluation
                batch = next(batches, None)
                if batch is None:
                    break
                loss = self._step(batch)
                s.train_seconds += time.perf_counter() - started
                s.step += 1
                s.batch_in_epoch += 1
                s.train_rows += len(batch)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.4f}", rows_per_s=f"{s.train_rows / s.train_seconds:,.0f}", refresh=False
                )
                at_eval = c.eval_every_steps is not None and s.step % c.eval_every_steps == 0
                at_end = c.max_steps is not None and s.step >= c.max_steps
                if at_eval or at_end:
                    self._evaluate(valid)
                    s.stopped = s.stopped or at_end
                if at_eval or at_end or (c.checkpoint_every_steps and s.step % c.checkpoint_every_steps == 0):
                    self._save_last()
            if s.stopped:
                break
            s.epoch += 1
            s.batch_in_epoch = 0
            if c.eval_every_steps is None:
                self._evaluate(valid)
            self._save_last()
        bar.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        best = None
        if valid is not None and s.best_step >= 0:
            rec = next(r for r in s.history if r["step"] == s.best_step)
            best = Metrics(rec["valid_auc"], rec["valid_logloss"], int(rec["valid_rows"]))
        return FitResult(
            best_valid=best,
            best_step=s.best_step,
            steps=s.step,
            epochs=s.epoch + s.batch_in_epoch / max(1, self._batches),
            train_seconds=s.train_seconds,
            samples_per_second=s.train_rows / s.train_seconds if s.train_seconds > 0 else float("nan"),
            history=list(s.history),
        )
