"""Distributed training: TorchRec-sharded tables, data-parallel dense part, one data shard per rank.

    torchrun --nproc-per-node 2 -m featmux.cli.main train --distributed --sharding table_wise,column_wise

Each process builds the same featmux model (same seed) around a `TorchRecEmbedding`;
DistributedModelParallel (DMP) shards its EBC by the planner's plan and wraps the rest in DDP. The
tables train with FBGEMM's fused optimizer (applied inside backward), the dense part with Adam.

The same numbers as one process with global batch G (up to float summation order):
    - rank r gets rows [r b, (r + 1) b) of global batch g (`featmux.distributed.data`);
    - its loss is W / n_g * sum of its rows' BCE, so DDP's gradient average is the gradient of the
      global mean;
    - TorchRec averages the table gradients coming back from the W ranks in the same way (its
      all-to-all backward divides by W: `torchrec.distributed.comm_ops.get_gradient_division()`).
Dropout draws different masks per rank, so only dropout-free models match bit for bit in distribution.

Checkpoints use torch.distributed.checkpoint (DCP): every rank writes its own shards (weights and
fused-optimizer state) into one directory, with `featmux.json` (model spec, training state) beside;
DCP reshards on load, so a run may resume under another plan or world size. `export_model` gathers
the tables into an ordinary single-process featmux checkpoint (`featmux.training.checkpoint.load_model`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum, unique
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed._shard.sharded_tensor import ShardedTensor

from featmux.distributed._deps import require_torchrec

require_torchrec()

from torchrec.distributed.comm_ops import get_gradient_division  # noqa: E402
from torchrec.distributed.model_parallel import DistributedModelParallel  # noqa: E402
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper  # noqa: E402
from torchrec.optim.optimizers import in_backward_optimizer_filter  # noqa: E402

from featmux.data.cache import EncodedDataset  # noqa: E402
from featmux.distributed.data import RankBatch, rank_batches  # noqa: E402
from featmux.distributed.embedding import TorchRecEmbedding  # noqa: E402
from featmux.distributed.launch import DistEnv, current_env  # noqa: E402
from featmux.distributed.sharding import ShardingConfig, make_topology, plan_sharding  # noqa: E402
from featmux.features import Schema  # noqa: E402
from featmux.models import CTRModel, build_model  # noqa: E402
from featmux.training.checkpoint import model_spec, save_model  # noqa: E402
from featmux.training.config import TrainConfig  # noqa: E402
from featmux.training.metrics import Metrics, binary_metrics  # noqa: E402
from featmux.training.trainer import FitSummary, TrainProgress  # noqa: E402

CHECKPOINT_FORMAT = 1


@unique
class TableInit(Enum):
    """How the sharded tables get their first values.

    FEATMUX: the tables of the model as built (every rank builds the same unsharded layer from the
        seed and keeps its shards): the run starts exactly where a one-process run starts. Needs the
        whole table in each process's memory once.
    SHARD: each rank draws N(0, 0.01^2) for its own shards only; nothing global is ever allocated (the
        model is built with `tables_on_meta`). Reproducible for a given plan and world size only.
    """

    FEATMUX = "featmux"
    SHARD = "shard"


@dataclass
class DistributedState(TrainProgress):
    """Where training stands (identical on every rank); saved in each checkpoint's featmux.json."""

    table_learning_rate: float = 0.0
    losses: list[float] = field(default_factory=list)  # global mean training loss of every step


@dataclass(frozen=True)
class DistributedFitResult(FitSummary):
    """What `DistributedTrainer.fit` measured (identical on every rank): the `FitSummary` fields, with
    train_seconds on rank 0's clock and samples_per_second in global rows, and `losses`, the global
    mean training loss of each step."""

    losses: list[float]


def _is_meta(embedding: TorchRecEmbedding) -> bool:
    return any(p.is_meta for p in embedding.ebc.parameters())


class DistributedTrainer:
    """Trains a featmux model over a TorchRec-sharded embedding (see the module docstring).

    Call inside an initialized process group (`init_distributed` or `launch_local`). The model must
    use a `TorchRecEmbedding`; it is sharded in place by DistributedModelParallel.

    Args:
        model: a featmux CTR model whose `embedding` is a `TorchRecEmbedding` (EBC on cpu or meta).
        config: training options (batch_size is the global batch; learning_rate is the dense Adam's;
            `optimizer` and `embedding_l2` are single-process options and must keep their defaults).
        sharding: planner constraints and the fused table optimizer.
        schema: the data schema (stored in checkpoints).
        checkpoint_dir: where `last/`, `best/` (DCP directories) go; a shared filesystem across hosts.
        on_event: receives dicts such as {"event": "eval", "step": ..., "valid_auc": ...} (every rank).

    Example:
        >>> env = init_distributed()
        >>> model = DCNv2(TorchRecEmbedding(layer), num_dense=0, config=DCNv2Config(hidden=(64,)))
        >>> trainer = DistributedTrainer(model, TrainConfig(batch_size=4096), ShardingConfig(), schema)
        >>> result = trainer.fit(train, valid)
    """

    def __init__(
        self,
        model: CTRModel,
        config: TrainConfig,
        sharding: ShardingConfig,
        schema: Schema,
        checkpoint_dir: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        embedding = model.embedding
        if not isinstance(embedding, TorchRecEmbedding):
            raise TypeError(
                f"the model's embedding must be a TorchRecEmbedding, got {type(embedding).__name__}"
            )
        if embedding.is_sharded:
            raise ValueError("the embedding is already sharded")
        if config.embedding_l2 > 0:
            raise ValueError("embedding_l2 is not supported with fused table optimizers (set it to 0)")
        self.env: DistEnv = current_env()
        sharding.check_device(self.env.device.type)
        self.config = config
        self.sharding = sharding
        self.schema = schema
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.on_event = on_event
        self.model = model
        self.embedding = embedding
        self.spec = model_spec(model, schema)  # before sharding: the unsharded featmux model it stands for
        world = self.env.world_size
        self.local_batch = -(-config.batch_size // world)
        if not get_gradient_division():
            raise RuntimeError(
                "TorchRec gradient division is off: table gradients would be W times too large"
            )
        initial = None if _is_meta(embedding) else embedding.featmux_state_dict()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        topology = make_topology(world, self.env.device.type, local_world)
        plan, self.plan_report = plan_sharding(
            model, embedding, sharding, topology, self.local_batch, collective=True
        )
        self.plan_text = str(plan)
        self.dmp = DistributedModelParallel(
            model, device=self.env.device, plan=plan, sharders=sharding.sharders()
        )
        if initial is not None:
            embedding.load_featmux_state_dict(initial)  # TableInit.FEATMUX: same start as one process
        dense = dict(in_backward_optimizer_filter(self.dmp.named_parameters()))
        self.dense_parameters = list(dense.values())
        lr = config.learning_rate
        self.optimizer = CombinedOptimizer(
            [self.dmp.fused_optimizer, KeyedOptimizerWrapper(dense, lambda ps: torch.optim.Adam(ps, lr=lr))]
        )
        self.state = DistributedState(learning_rate=lr, table_learning_rate=sharding.optimizer.learning_rate)
        self._best: dict[str, list[torch.Tensor]] | None = None
        self._pending_losses: list[torch.Tensor] = []

    # -- one step, evaluation -------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def train_step(self, part: RankBatch) -> torch.Tensor:
        """One optimizer step on this rank's part of a global batch; returns its local BCE sum."""
        batch = part.batch.to(self.env.device)
        mask = part.mask.to(self.env.device)
        self.optimizer.zero_grad()
        logits = self.dmp(batch.sparse, batch.dense)  # [b]
        per_row = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")  # [b]
        local_sum = (per_row * mask).sum()
        (local_sum * (self.env.world_size / part.global_rows)).backward()
        if self.config.max_grad_norm is not None and self.dense_parameters:
            torch.nn.utils.clip_grad_norm_(self.dense_parameters, self.config.max_grad_norm)
        self.optimizer.step()
        return local_sum.detach()

    def _flush_losses(self, global_rows: list[int]) -> None:
        """Turn the pending local loss sums into global means with one all_reduce."""
        if not self._pending_losses:
            return
        sums = torch.stack(self._pending_losses).double()  # on the collective device (nccl: cuda)
        dist.all_reduce(sums)
        self.state.losses += (sums.cpu() / torch.tensor(global_rows, dtype=torch.float64)).tolist()
        self._pending_losses = []

    @torch.no_grad()
    def predict(
        self, dataset: EncodedDataset, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, logits) of the whole dataset in its stored order, gathered on every rank.

        Args:
            dataset: the split to score.
            batch_size: global rows per evaluation batch (default: the config's eval_batch_size).
        """
        env = self.env
        was_training = self.dmp.training
        self.dmp.eval()
        logits, labels, masks, sizes = [], [], [], []
        for part in rank_batches(
            dataset, batch_size or self.config.eval_batch_size, env.rank, env.world_size
        ):
            batch = part.batch.to(env.device)
            logits.append(self.dmp(batch.sparse, batch.dense).float().cpu())
            labels.append(part.batch.labels)
            masks.append(part.mask)
            sizes.append(part.mask.numel())
        self.dmp.train(was_training)
        if not sizes:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        local = torch.stack([torch.cat(logits), torch.cat(labels), torch.cat(masks)]).to(
            env.device
        )  # [3, sum b]
        gathered = [torch.empty_like(local) for _ in range(env.world_size)]
        dist.all_gather(gathered, local)  # nccl gathers cuda tensors only
        everything = torch.stack(gathered).cpu()  # [W, 3, sum b]
        bounds = np.cumsum([0, *sizes])
        # global batch k = rank 0's rows of k, then rank 1's, ...: put the rows back in dataset order
        ordered = torch.cat(
            [everything[:, :, s:e].permute(1, 0, 2).reshape(3, -1) for s, e in itertools.pairwise(bounds)],
            dim=1,
        )  # [3, W * sum b]
        keep = ordered[2] > 0
        return ordered[1][keep].numpy(), ordered[0][keep].numpy()

    def evaluate(self, dataset: EncodedDataset) -> Metrics:
        """AUC and logloss over the whole dataset, every rank's predictions included (same on all ranks)."""
        return binary_metrics(*self.predict(dataset))

    # -- snapshots of the sharded weights (best model) ------------------------------------------------
    def _local_tensors(self) -> dict[str, list[torch.Tensor]]:
        out: dict[str, list[torch.Tensor]] = {}
        for key, value in self.dmp.state_dict().items():
            if isinstance(value, ShardedTensor):
                out[key] = [s.tensor for s in value.local_shards()]
            elif isinstance(value, torch.Tensor):
                out[key] = [value]
        return out

    @torch.no_grad()
    def _snapshot(self) -> dict[str, list[torch.Tensor]]:
        return {k: [t.detach().clone() for t in ts] for k, ts in self._local_tensors().items()}

    @torch.no_grad()
    def _restore(self, snapshot: dict[str, list[torch.Tensor]]) -> None:
        for key, tensors in self._local_tensors().items():
            for target, source in zip(tensors, snapshot[key], strict=True):
                target.copy_(source)

    # -- checkpoints ------------------------------------------------------------------------------------
    def _app_state(self, optimizer: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.dmp.state_dict()}
        if optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def save_checkpoint(self, path: Path, optimizer: bool = True) -> None:
        """Write a sharded checkpoint directory (collective: every rank calls it).

        Written under a temporary name and renamed when every rank is done, so a crash never leaves
        a half-written `path`. `path` must be on a filesystem every rank sees.

        Args:
            path: the checkpoint directory.
            optimizer: include the optimizer state (needed to resume; not for a best-model copy).
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        if self.env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        dcp.save(self._app_state(optimizer), checkpoint_id=str(tmp))
        dist.barrier()
        if self.env.is_main:
            meta = {
                "featmux_format": CHECKPOINT_FORMAT,
                "spec": self.spec,
                "train_state": asdict(self.state),
                "world_size": self.env.world_size,
                "optimizer": optimizer,
                "sharding": {
                    "optimizer": self.sharding.optimizer.kind.value,
                    "learning_rate": self.sharding.optimizer.learning_rate,
                    "plan": self.plan_report.to_markdown(),
                },
            }
            (tmp / "featmux.json").write_text(json.dumps(meta, indent=1, default=str))
            previous = path.with_name(f".{path.name}.prev")
            shutil.rmtree(previous, ignore_errors=True)
            if path.exists():
                os.replace(path, previous)
            os.replace(tmp, path)
            shutil.rmtree(previous, ignore_errors=True)
        dist.barrier()

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimizer state and training state from `save_checkpoint` (collective).

        The checkpoint may come from another plan or world size: DCP reshards while reading.
        """
        path = Path(path)
        meta = json.loads((path / "featmux.json").read_text())
        if meta.get("featmux_format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a featmux distributed checkpoint (format {CHECKPOINT_FORMAT})")
        if meta["spec"] != json.loads(json.dumps(self.spec, default=str)):
            raise ValueError(f"{path}: the checkpoint holds a different model: {meta['spec']}")
        if meta["optimizer"]:
            self.optimizer.init_state()  # lazy optimizer state must exist to be loaded in place
        state = self._app_state(meta["optimizer"])
        dcp.load(state, checkpoint_id=str(path))
        self.dmp.load_state_dict(state["model"])
        if meta["optimizer"]:
            self.optimizer.load_state_dict(state["optimizer"])
        self.state = DistributedState(**meta["train_state"])
        self._set_learning_rates(self.state.learning_rate, self.state.table_learning_rate)

    def export_model(self, path: Path) -> None:
        """Gather the tables and write an ordinary featmux model file on rank 0 (collective).

        The file loads in one process with `featmux.training.checkpoint.load_model`, as the unsharded
        featmux embedding (unified, hashing or collisionless) it was converted from.
        """
        layer = self.embedding.to_featmux(dst=0)
        dense = {k: v for k, v in self.dmp.state_dict().items() if not k.startswith("embedding.")}
        if layer is None:
            return
        model = build_model(self.spec["model"], layer, int(self.spec["num_dense"]), self.spec["model_config"])
        state = {
            **{k: v.cpu() for k, v in dense.items()},
            **{f"embedding.{k}": v for k, v in layer.state_dict().items()},
        }
        model.load_state_dict(state)
        save_model(path, model, self.schema)

    # -- the loop -------------------------------------------------------------------------------------
    def _set_learning_rates(self, dense_lr: float, table_lr: float) -> None:
        for _, opt in self.optimizer.optimizers:
            lr = table_lr if opt is self.dmp.fused_optimizer else dense_lr
            for group in opt.param_groups:
                group["lr"] = lr

    def _evaluate(self, valid: EncodedDataset | None, batches_per_epoch: int) -> None:
        s = self.state
        record: dict[str, float] = {
            "step": s.step,
            "epoch": s.epoch + s.batch_in_epoch / max(1, batches_per_epoch),
        }
        if s.losses:
            record["train_loss"] = s.losses[-1]
        if valid is None:
            s.best_step = s.step
            s.history.append(record)
            return
        metrics = self.evaluate(valid)
        record.update(metrics.as_dict("valid_"))
        s.history.append(record)
        if metrics.auc > s.best_auc:
            s.best_auc, s.best_step, s.bad_evals = metrics.auc, s.step, 0
            if self.checkpoint_dir is not None:
                self.save_checkpoint(self.checkpoint_dir / "best", optimizer=False)
            else:
                self._best = self._snapshot()
        else:
            s.bad_evals += 1
            if s.bad_evals >= self.config.patience:
                s.stopped = True
            elif self.config.lr_decay < 1:
                s.learning_rate *= self.config.lr_decay
                s.table_learning_rate *= self.config.lr_decay
                self._set_learning_rates(s.learning_rate, s.table_learning_rate)
        self._emit({"event": "eval", **record, "best_auc": s.best_auc})

    def fit(
        self, train: EncodedDataset, valid: EncodedDataset | None = None, resume: bool = True
    ) -> DistributedFitResult:
        """Train until `epochs`, `max_steps` or early stopping; the model ends with the best weights.

        Args:
            train: training split (every rank opens it and reads only its rows).
            valid: validation split for early stopping and AUC (None: keep the last weights).
            resume: continue from `checkpoint_dir/last` if it exists.
        """
        c, env = self.config, self.env
        last = self.checkpoint_dir / "last" if self.checkpoint_dir is not None else None
        if resume and last is not None and (last / "featmux.json").is_file():
            self.load_checkpoint(last)
            self._emit({"event": "resumed", "from": str(last), "step": self.state.step})
        else:
            torch.manual_seed(c.seed)
        s = self.state
        batches_per_epoch = train.num_batches(c.batch_size)
        rows: list[int] = []

        def done() -> bool:  # early stopping or max_steps (a resumed run may raise max_steps)
            return s.stopped or (c.max_steps is not None and s.step >= c.max_steps)

        self.dmp.train()
        while not done() and s.epoch < c.epochs:
            parts = rank_batches(
                train, c.batch_size, env.rank, env.world_size, True, c.seed, s.epoch, s.batch_in_epoch
            )
            while not done():
                started = time.perf_counter()
                part = next(parts, None)
                if part is None:
                    break
                self._pending_losses.append(self.train_step(part))
                rows.append(part.global_rows)
                s.train_seconds += time.perf_counter() - started
                s.step += 1
                s.batch_in_epoch += 1
                s.train_rows += part.global_rows
                at_eval = c.eval_every_steps is not None and s.step % c.eval_every_steps == 0
                at_end = c.max_steps is not None and s.step >= c.max_steps
                at_save = c.checkpoint_every_steps is not None and s.step % c.checkpoint_every_steps == 0
                if at_eval or at_end or at_save:
                    self._flush_losses(rows)
                    rows = []
                if at_eval or at_end:
                    self._evaluate(valid, batches_per_epoch)
                if last is not None and (at_eval or at_end or at_save):
                    self.save_checkpoint(last)
            self._flush_losses(rows)
            rows = []
            if done():
                break
            s.epoch += 1
            s.batch_in_epoch = 0
            if c.eval_every_steps is None:
                self._evaluate(valid, batches_per_epoch)
            if last is not None:
                self.save_checkpoint(last)
        self._flush_losses(rows)
        self._restore_best(valid)
        seconds = torch.tensor([s.train_seconds], dtype=torch.float64, device=env.device)
        dist.broadcast(seconds, src=0)  # one clock for every rank's report
        return DistributedFitResult(
            best_valid=s.best_valid(),
            best_step=s.best_step,
            steps=s.step,
            losses=list(s.losses),
            train_seconds=float(seconds.item()),
            samples_per_second=s.rows_per_second(seconds.item()),
            history=list(s.history),
        )

    def _restore_best(self, valid: EncodedDataset | None) -> None:
        s = self.state
        if valid is None or s.best_step == s.step or s.best_step < 0:
            return
        if self.checkpoint_dir is not None and (self.checkpoint_dir / "best" / "featmux.json").is_file():
            state = self._app_state(optimizer=False)
            dcp.load(state, checkpoint_id=str(self.checkpoint_dir / "best"))
            self.dmp.load_state_dict(state["model"])
        elif self._best is not None:
            self._restore(self._best)
