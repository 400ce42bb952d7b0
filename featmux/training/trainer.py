"""The training loop: optimizers, early stopping on validation AUC, checkpoints and resume.

Models stay pure modules; the Trainer owns everything around them. Resumable state (model,
optimizers, RNG, position in the data stream, early-stopping counters) is written atomically to
`<checkpoint_dir>/last.pt` (the one it replaces is kept as `last.prev.pt`, and used when `last.pt` is
truncated or corrupted); the best model by validation AUC to `<checkpoint_dir>/best.pt`. A run
restarted with the same data, config and directory continues where it stopped and ends with the
same weights as an uninterrupted run.

A batch whose loss is NaN or infinite never updates the weights: the run stops with a
`NonFiniteLossError` naming the batch (and the rows that caused it), or skips the batch and counts it,
as `TrainConfig.on_nonfinite` says; the batch is saved to `<checkpoint_dir>/nonfinite-step<N>.pt`.
"""

from __future__ import annotations

import copy
import math
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
from featmux.training.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    load_resumable,
    model_spec,
    safe_load,
    save_model,
    save_rotating,
)
from featmux.training.config import NonFinitePolicy, OptimizerKind, TrainConfig
from featmux.training.hooks import run_step_hooks, step_hooks
from featmux.training.metrics import Metrics, binary_metrics
from featmux.training.optim import RowAdam


@torch.no_grad()
def predict(
    model: CTRModel, dataset: EncodedDataset, batch_size: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits) over a whole dataset, in its stored order, computed where the model lives."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    labels, logits = [], []
    for batch in dataset.batches(batch_size):
        on_device = batch.to(device)
        logits.append(model(on_device.sparse, on_device.dense).float().cpu().numpy())
        labels.append(batch.labels.numpy())
    model.train(was_training)
    if not labels:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(logits)


def evaluate(model: CTRModel, dataset: EncodedDataset, batch_size: int = 16384) -> Metrics:
    """AUC and logloss of `model` on `dataset`."""
    return binary_metrics(*predict(model, dataset, batch_size))


@dataclass
class TrainProgress:
    """Where a training run stands, as every trainer keeps it (saved in its resumable checkpoints)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_auc: float = float("-inf")
    best_step: int = -1
    bad_evals: int = 0
    learning_rate: float = 0.0
    train_seconds: float = 0.0
    train_rows: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one record per evaluation
    stopped: bool = False

    def best_valid(self) -> Metrics | None:
        """Validation metrics of the best evaluation (None before one, or without validation data)."""
        rec = next((r for r in self.history if r["step"] == self.best_step), None)
        if rec is None or "valid_auc" not in rec:
            return None
        return Metrics(rec["valid_auc"], rec["valid_logloss"], int(rec["valid_rows"]))

    def rows_per_second(self, seconds: float) -> float:
        """Training rows per second over `seconds` of training (NaN before any)."""
        return self.train_rows / seconds if seconds > 0 else float("nan")


@dataclass
class TrainState(TrainProgress):
    """Where `Trainer` stands; saved in every resumable checkpoint."""

    skipped_batches: int = 0  # batches with a non-finite loss, skipped under NonFinitePolicy.SKIP


class NonFiniteLossError(RuntimeError):
    """A batch gave a NaN or infinite loss; the message names the batch, its bad rows and the likely cause.

    Args:
        message: the report.
        step: the step (1-based) the batch would have been.
        dump: where the batch was saved (None without a checkpoint directory).
    """

    def __init__(self, message: str, step: int, dump: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.dump = dump


@dataclass(frozen=True)
class FitSummary:
    """What every trainer's `fit` measured.

    Args:
        best_valid: validation metrics at the best evaluation (None without validation data).
        best_step: step of the best evaluation.
        steps: optimizer steps taken.
        train_seconds: time in training steps (data loading included, evaluation excluded).
        samples_per_second: training rows per second.
        history: one record per evaluation.
    """

    best_valid: Metrics | None
    best_step: int
    steps: int
    train_seconds: float
    samples_per_second: float
    history: list[dict[str, float]]


@dataclass(frozen=True)
class FitResult(FitSummary):
    """What `Trainer.fit` measured: the `FitSummary` fields and `epochs`, the epochs trained (fractional)."""

    epochs: float


RESUMABLE_KEYS = ("spec", "state", "optimizers", "train_state", "torch_rng")
"""Entries every resumable checkpoint has."""


def epoch_batches(rows: int, batch_size: int) -> int:
    """Training batches per epoch: a final batch of a single row is dropped, not trained on.

    BatchNorm cannot normalize a batch of one row (it raises in training mode); the dropped row is a
    different one each epoch (the order is shuffled), so it is not lost. With `batch_size` 1 every
    batch is kept.
    """
    if batch_size > 1 and rows % batch_size == 1:
        return rows // batch_size
    return -(-rows // batch_size)


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
        self.device = torch.device(config.device)
        model.to(self.device)  # before the optimizers are built: their state follows the weights
        self._tables = model.embedding.table_parameters()
        self._best_state: dict[str, torch.Tensor] | None = None
        sparse = config.optimizer is OptimizerKind.SPARSE_ADAM
        model.embedding.set_sparse_gradients(sparse)
        model.embedding.set_row_updates(False)
        dense_params = model.dense_parameters()
        self.optimizers: list[torch.optim.Optimizer] = []
        if config.optimizer is OptimizerKind.ROW_ADAM:
            table_modules = model.embedding.table_modules()
            covered = {id(t.weight) for t in table_modules}
            if any(id(p) not in covered for p in self._tables):
                raise ValueError(
                    f"optimizer row_adam needs featmux table layers; {type(model.embedding).__name__} has "
                    "tables it cannot update: use adam or sparse_adam"
                )
            if table_modules:  # lazy L2 on the rows read, as with sparse_adam
                self.optimizers.append(
                    RowAdam(table_modules, lr=config.learning_rate, weight_decay=config.embedding_l2)
                )
            if dense_params:
                self.optimizers.append(torch.optim.Adam(dense_params, lr=config.learning_rate))
        elif sparse:
            if self._tables:
                self.optimizers.append(torch.optim.SparseAdam(self._tables, lr=config.learning_rate))
            if dense_params:
                self.optimizers.append(torch.optim.Adam(dense_params, lr=config.learning_rate))
        else:
            self.optimizers.append(torch.optim.Adam(list(model.parameters()), lr=config.learning_rate))
        self._dense_params = dense_params
        self._hooks = step_hooks(model)  # e.g. CCE's re-clustering (featmux.training.hooks)

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path | None:
        return self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None

    @property
    def best_path(self) -> Path | None:
        return self.checkpoint_dir / "best.pt" if self.checkpoint_dir else None

    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> None:
        """Write the resumable checkpoint `<checkpoint_dir>/last.pt` atomically (nothing without a directory).

        Args:
            extra: more entries to store beside the model, optimizers, RNG and state (e.g. a data-stream
                position); `restore` callers find them in the payload.
        """
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
            **(extra or {}),
        }
        save_rotating(payload, self.last_path)  # keeps one older good checkpoint to fall back on

    def _load_last(self) -> bool:
        """Restore from last.pt (or, if it is damaged, the previous one). True if something was restored."""
        assert self.last_path is not None
        found = load_resumable(self.last_path, RESUMABLE_KEYS)
        if found is None:
            return False
        self.restore(found.payload, found.path, found.damaged)
        return True

    def restore(
        self, payload: dict[str, Any], source: Path | str = "checkpoint", damaged: tuple[str, ...] = ()
    ) -> None:
        """Continue from a resumable checkpoint's payload: weights, optimizers, RNG and training state.

        Args:
            payload: a resumable checkpoint, as `featmux.training.checkpoint.load_resumable` finds it.
            source: the file it came from, named in errors and events.
            damaged: messages about newer checkpoints that were unusable (reported in the `resumed` event).

        Raises:
            CheckpointError: the checkpoint was written for a different model or data.
        """
        current = model_spec(self.model, self.schema)
        if payload["spec"] != current:
            differ = sorted(k for k in current if payload["spec"].get(k) != current[k])
            raise CheckpointError(
                f"{source}: written for a different model or data (its {', '.join(differ)} differ from this "
                "run's): use another checkpoint directory, or start over (batch runs: `featmux train "
                "--no-resume`, `Trainer.fit(resume=False)`)"
            )
        self.model.load_state_dict(payload["state"])
        for opt, sd in zip(self.optimizers, payload["optimizers"], strict=True):
            opt.load_state_dict(sd)
        self.state = TrainState(**payload["train_state"])
        torch.set_rng_state(payload["torch_rng"])
        self._set_lr(self.state.learning_rate)
        self._best_state = None
        if self.best_path is not None and self.best_path.exists():
            try:
                self._best_state = safe_load(self.best_path)["state"]
            except CheckpointError as err:  # the best weights so far are lost; training goes on
                damaged = (*damaged, f"{err} (best model so far lost: the next evaluation becomes the best)")
                self.state.best_auc = float("-inf")
        self._emit(
            {
                "event": "resumed",
                "from": str(source),
                "step": self.state.step,
                "skipped_damaged": list(damaged),
            }
        )

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
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            logits = self.model(batch.sparse, batch.dense)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels)
        extra = self.model.embedding.auxiliary_loss()
        if extra is not None:
            loss = loss + extra
        if not torch.isfinite(loss):  # no update from a NaN/Inf loss; `train_step` reports it
            return float(loss.detach())
        loss.backward()
        if self.config.embedding_l2 > 0:
            _embedding_l2(self._tables, self.config.embedding_l2)
        if self.config.max_grad_norm is not None and self._dense_params:
            torch.nn.utils.clip_grad_norm_(self._dense_params, self.config.max_grad_norm)
        for opt in self.optimizers:
            opt.step()
        return float(loss.detach())

    def train_step(self, batch: Batch, where: str, rows: Callable[[np.ndarray], str] | None = None) -> float:
        """One optimizer step, guarded: a NaN/Inf loss is reported and, per `on_nonfinite`, stops or skips.

        Then the model's training-step hooks (`featmux.training.hooks`) run with the number this step
        takes, `state.step + 1` (the caller advances `state.step` after this call), skipped steps included.

        Args:
            batch: the batch.
            where: where the batch comes from, for the report (e.g. "epoch 2, batch 17").
            rows: names the batch rows at the given positions (e.g. file:line); default: positions.

        Returns:
            The batch loss (NaN or infinite when the batch was skipped: then nothing was updated).

        Raises:
            NonFiniteLossError: a non-finite loss under `NonFinitePolicy.STOP`, or weights that are
                themselves non-finite (skipping cannot help then).
        """
        batch = batch.to(self.device)
        finite_inputs = batch.dense.numel() == 0 or bool(torch.isfinite(batch.dense).all())
        loss = self._step(batch) if finite_inputs else float("nan")  # NaN inputs never reach the model
        if not math.isfinite(loss):
            self._nonfinite(batch, loss, where, rows)
        run_step_hooks(self._hooks, self.state.step + 1, self.optimizers)
        return loss

    def _nonfinite(
        self, batch: Batch, loss: float, where: str, rows: Callable[[np.ndarray], str] | None
    ) -> None:
        step = self.state.step + 1
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            was_training = self.model.training
            self.model.eval()
            logits = self.model(batch.sparse, batch.dense)
            self.model.train(was_training)
            per_row = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
        bad = torch.nonzero(~torch.isfinite(per_row)).flatten().cpu().numpy()
        causes = []
        if batch.dense.numel():
            bad_inputs = int((~torch.isfinite(batch.dense)).any(dim=1).sum())
            if bad_inputs:
                causes.append(f"{bad_inputs} row(s) have NaN/Inf numeric features")
        broken = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        broken += [
            n
            for n, b in self.model.named_buffers()
            if b.is_floating_point() and not bool(torch.isfinite(b).all())
        ]
        if broken:
            causes.append(
                f"the model's weights are already NaN/Inf ({', '.join(broken[:3])}): lower the learning rate "
                "or set max_grad_norm, and resume from the last checkpoint"
            )
        if bad.size:
            named = rows(bad) if rows is not None else f"positions {bad[:8].tolist()}"
            culprits = f"{bad.size} of {len(batch)} rows give a non-finite loss: {named}"
        else:
            culprits = f"no single row does in evaluation mode (all {len(batch)} rows together)"
        dump = None
        if self.checkpoint_dir is not None:
            dump = self.checkpoint_dir / f"nonfinite-step{step}.pt"
            atomic_save(
                {
                    "where": where,
                    "ids": batch.sparse.ids,
                    "bags": [(b.values, b.offsets) for b in batch.sparse.bags],
                    "dense": batch.dense,
                    "labels": batch.labels,
                    "bad_rows": torch.from_numpy(bad),
                },
                dump,
            )
        message = (
            f"non-finite loss ({loss}) at step {step} ({where}): {culprits}"
            + (f"; cause: {'; '.join(causes)}" if causes else "")
            + (f"; batch saved to {dump}" if dump is not None else "")
        )
        self._emit(
            {"event": "nonfinite", "step": step, "where": where, "message": message, "dump": str(dump)}
        )
        if self.config.on_nonfinite is NonFinitePolicy.STOP or broken:
            hint = "" if broken else " (set on_nonfinite='skip' to skip such batches)"
            raise NonFiniteLossError(message + hint, step, dump)
        self.state.skipped_batches += 1

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

        A final batch of one row is dropped each epoch (see `epoch_batches`).

        Args:
            train: training split.
            valid: validation split for early stopping (None: train all epochs, keep the last weights).
            resume: continue from `checkpoint_dir/last.pt` if it exists.
        """
        c = self.config
        if c.threads is not None:
            torch.set_num_threads(c.threads)
        self._batches = epoch_batches(len(train), c.batch_size)
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
                if batch is None or (len(batch) == 1 and c.batch_size > 1):  # see `epoch_batches`
                    break
                loss = self.train_step(batch, f"epoch {s.epoch}, batch {s.batch_in_epoch} of the epoch")
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
                    self.save_checkpoint()
            if s.stopped:
                break
            s.epoch += 1
            s.batch_in_epoch = 0
            if c.eval_every_steps is None:
                self._evaluate(valid)
            self.save_checkpoint()
        bar.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return FitResult(
            best_valid=s.best_valid(),
            best_step=s.best_step,
            steps=s.step,
            epochs=s.epoch + s.batch_in_epoch / max(1, self._batches),
            train_seconds=s.train_seconds,
            samples_per_second=s.rows_per_second(s.train_seconds),
            history=list(s.history),
        )
