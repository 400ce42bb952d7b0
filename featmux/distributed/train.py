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
Batch norm: every `nn.BatchNorm1d` becomes a `GlobalBatchNorm` (`featmux.distributed.batch_norm`),
whose training statistics are those of the global batch (all ranks' real rows, no padding), so the
model is the one-process model, running statistics included. Tables the planner would replicate
(data_parallel) are kept out of that choice unless asked for by name; a table asked to be
data_parallel trains with the table optimizer (unfused, on its all-reduced gradient), never with the
dense optimizer or inside the dense gradient clipping.

Dropout draws different masks on every rank (rank 0 is seeded with `seed`, rank r with a seed derived
from (seed, r)), so dropout models match a one-process run in distribution only; each rank's RNG state
is in the checkpoint, so they resume exactly (under the same world size).

A NaN/Inf loss is found before backward: the per-step all_reduce of the loss sums carries it to every
rank, and all of them stop (`NonFiniteLossError`) or skip the batch together, as `on_nonfinite` says;
nothing is updated and no checkpoint is written from it.

Checkpoints use torch.distributed.checkpoint (DCP): every rank writes its own shards (weights and
fused-optimizer state) into one directory, with `featmux.json` (model spec, training state, a digest of
every file) and one RNG file per rank beside; DCP reshards on load, so a run may resume under another
plan or world size. The directory replaced by a save is kept as `<name>.prev`; a checkpoint whose
files do not match their digests, or one lost between the two renames of a save, is reported and the
previous one used. `export_model` gathers the tables into an ordinary single-process featmux
checkpoint (`featmux.training.checkpoint.load_model`).
"""

from __future__ import annotations

import hashlib
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

from featmux.atomic import write_json_atomic  # noqa: E402
from featmux.data.cache import EncodedDataset  # noqa: E402
from featmux.distributed.batch_norm import GlobalBatchNorm  # noqa: E402
from featmux.distributed.data import RankBatch, rank_batches  # noqa: E402
from featmux.distributed.embedding import TorchRecEmbedding  # noqa: E402
from featmux.distributed.launch import DistEnv, current_env  # noqa: E402
from featmux.distributed.sharding import ShardingConfig, make_topology, plan_sharding  # noqa: E402
from featmux.features import Schema  # noqa: E402
from featmux.models import CTRModel, build_model  # noqa: E402
from featmux.training.checkpoint import (  # noqa: E402
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    model_spec,
    safe_load,
    save_model,
    with_checksum,
)
from featmux.training.config import NonFinitePolicy, OptimizerKind, TrainConfig  # noqa: E402
from featmux.training.metrics import Metrics, binary_metrics  # noqa: E402
from featmux.training.trainer import FitSummary, NonFiniteLossError, TrainProgress, epoch_batches  # noqa: E402

CHECKPOINT_FORMAT = 1
META_FILE = "featmux.json"


@unique
class TableInit(Enum):
    """How the sharded tables get their first values.

    FEATMUX: the values a one-process run starts from (`featmux train` with the same seed): every rank
        replays the featmux initialization stream in bounded chunks and keeps the rows and columns of
        its own shards (`TorchRecEmbedding.fill_from_draws`); no rank ever holds a whole table.
    SHARD: each rank draws N(0, 0.01^2) for its own shards only (TorchRec's init_fn), cheaper for huge
        tables. Reproducible for a given plan and world size only.
    """

    FEATMUX = "featmux"
    SHARD = "shard"


@dataclass
class DistributedState(TrainProgress):
    """Where training stands (identical on every rank); saved in each checkpoint's featmux.json."""

    table_learning_rate: float = 0.0
    losses: list[float] = field(default_factory=list)  # global mean training loss of every step
    skipped_batches: int = 0  # global batches with a non-finite loss, skipped under on_nonfinite=skip


@dataclass(frozen=True)
class DistributedFitResult(FitSummary):
    """What `DistributedTrainer.fit` measured (identical on every rank): the `FitSummary` fields, with
    train_seconds on rank 0's clock and samples_per_second in global rows, and

    Args:
        losses: the global mean training loss of each step (NaN for a skipped batch).
        resumed_from_step: the step the run resumed at (None: it started from scratch).
        steps_this_launch: optimizer steps taken by this call.
        skipped_batches: global batches skipped for a non-finite loss (whole run).
    """

    losses: list[float]
    resumed_from_step: int | None = None
    steps_this_launch: int = 0
    skipped_batches: int = 0


def rank_seed(seed: int, rank: int) -> int:
    """The RNG seed of `rank` (dropout masks): `seed` itself on rank 0, a derived one elsewhere.

    Args:
        seed: the run's seed.
        rank: the process rank.
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _is_meta(embedding: TorchRecEmbedding) -> bool:
    return any(p.is_meta for p in embedding.ebc.parameters())


def _previous(path: Path) -> Path:
    return path.with_name(f"{path.name}.prev")


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _digests(directory: Path, names: list[str], env: DistEnv) -> dict[str, str]:
    """Digests of `directory`'s files `names`, each rank hashing its share (collective)."""
    mine = {name: _file_digest(directory / name) for name in names[env.rank :: env.world_size]}
    parts: list[Any] = [None] * env.world_size
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


class DistributedTrainer:
    """Trains a featmux model over a TorchRec-sharded embedding (see the module docstring).

    Call inside an initialized process group (`init_distributed` or `launch_local`). The model must
    use a `TorchRecEmbedding`; it is sharded in place by DistributedModelParallel.

    Args:
        model: a featmux CTR model whose `embedding` is a `TorchRecEmbedding` (EBC on cpu or meta);
            its BatchNorm1d layers are replaced by `GlobalBatchNorm` in place.
        config: training options (batch_size is the global batch; learning_rate is the dense
            optimizer's; `optimizer` must be adam and `embedding_l2` 0: single-process options; device
            must be the process group's device; on_nonfinite and autocast_bf16 apply).
        sharding: planner constraints, the fused table optimizer and the dense optimizer.
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
        self.env: DistEnv = current_env()
        check_train_config(config, self.env.device.type)
        GlobalBatchNorm.convert(model)  # statistics of the global batch, padding left out
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
            embedding.load_featmux_state_dict(initial)  # the same start as one process
        # parameters outside the fused optimizer: the dense part and any replicated (data_parallel) table
        unfused = dict(in_backward_optimizer_filter(self.dmp.named_parameters()))
        table_ids = {id(p) for p in embedding.ebc.parameters()}
        dense = {k: p for k, p in unfused.items() if id(p) not in table_ids}
        replicated = {k: p for k, p in unfused.items() if id(p) in table_ids}
        self.dense_parameters = list(dense.values())
        self.data_parallel_tables = sorted(
            t.table for t in self.plan_report.tables if t.sharding == "data_parallel"
        )
        lr = config.learning_rate
        optimizers: list[Any] = [
            self.dmp.fused_optimizer,
            KeyedOptimizerWrapper(dense, lambda ps: sharding.dense_optimizer.build(ps, lr)),
        ]
        self._replicated_optimizer = None
        if replicated:
            table = sharding.optimizer
            self._replicated_optimizer = KeyedOptimizerWrapper(replicated, table.build_unfused)
            optimizers.append(self._replicated_optimizer)
        self.optimizer = CombinedOptimizer(optimizers)
        self.state = DistributedState(learning_rate=lr, table_learning_rate=sharding.optimizer.learning_rate)
        self._best: dict[str, list[torch.Tensor]] | None = None
        self._norms = GlobalBatchNorm.modules_of(model)

    # -- one step, evaluation -------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def train_step(self, part: RankBatch) -> float:
        """One optimizer step on this rank's part of a global batch (collective).

        The loss is checked before backward: when any rank's rows give a NaN/Inf loss, no rank runs
        backward or updates anything (the fused table update happens inside backward).

        Returns:
            The global mean loss of the batch (NaN/Inf when it was not applied: see `fit`).
        """
        env = self.env
        batch = part.batch.to(env.device)
        mask = part.mask.to(env.device)
        for norm in self._norms:
            norm.mask = mask  # padding rows stay out of the batch statistics
        self.optimizer.zero_grad()
        with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=self.config.autocast_bf16):
            logits = self.dmp(batch.sparse, batch.dense)  # [b]
        per_row = F.binary_cross_entropy_with_logits(logits.float(), batch.labels, reduction="none")  # [b]
        local_sum = (per_row * mask).sum()
        total = local_sum.detach().double().reshape(1)
        dist.all_reduce(total)  # every rank learns the global loss, NaN/Inf if any rank's rows are
        loss = float(total.item()) / part.global_rows
        if not np.isfinite(loss):
            return loss
        (local_sum * (env.world_size / part.global_rows)).backward()
        if self.config.max_grad_norm is not None and self.dense_parameters:
            torch.nn.utils.clip_grad_norm_(self.dense_parameters, self.config.max_grad_norm)
        self.optimizer.step()
        return loss

    def _nonfinite(self, part: RankBatch, loss: float, where: str) -> None:
        """Report a non-finite global loss; stop every rank (raise) or count the skip (collective)."""
        env, s = self.env, self.state
        step = s.step + 1
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            batch = part.batch.to(env.device)
            was_training = self.dmp.training
            self.dmp.eval()
            logits = self.dmp(batch.sparse, batch.dense).float()
            self.dmp.train(was_training)
            per_row = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
            real = part.mask.to(env.device) > 0
            bad_rows = int((~torch.isfinite(per_row) & real).sum())
            bad_inputs = (
                int(((~torch.isfinite(batch.dense)).any(dim=1) & real).sum()) if batch.dense.numel() else 0
            )
            broken = any(not bool(torch.isfinite(p).all()) for p in self.dense_parameters)
        counts = torch.tensor([bad_rows, bad_inputs, int(broken)], dtype=torch.float64, device=env.device)
        per_rank = [torch.zeros_like(counts) for _ in range(env.world_size)]
        dist.all_gather(per_rank, counts)
        table = torch.stack(per_rank).cpu()  # [W, 3]
        holders = [r for r in range(env.world_size) if table[r, 0] > 0]
        causes = []
        if table[:, 1].sum():
            causes.append(f"{int(table[:, 1].sum())} row(s) have NaN/Inf numeric features")
        weights_broken = bool(table[:, 2].sum())
        if weights_broken:
            causes.append(
                "the model's dense weights are already NaN/Inf: lower the learning rate or set "
                "max_grad_norm, and resume from the last checkpoint"
            )
        culprits = (
            f"{int(table[:, 0].sum())} of {part.global_rows} rows give a non-finite loss "
            f"(on rank(s) {holders})"
            if holders
            else f"no single row does in evaluation mode (all {part.global_rows} rows together)"
        )
        message = (
            f"non-finite loss ({loss}) at step {step} ({where}): {culprits}"
            + (f"; cause: {'; '.join(causes)}" if causes else "")
            + "; no rank updated anything"
        )
        self._emit({"event": "nonfinite", "step": step, "where": where, "message": message})
        if self.config.on_nonfinite is NonFinitePolicy.STOP or weights_broken:
            hint = "" if weights_broken else " (set on_nonfinite='skip' to skip such batches)"
            last = self.checkpoint_dir / "last" if self.checkpoint_dir is not None else None
            kept = f"; the last checkpoint ({last}) is kept" if last is not None and last.exists() else ""
            raise NonFiniteLossError(message + kept + hint, step, None)
        s.skipped_batches += 1

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

    def _rng_file(self, rank: int) -> str:
        return f"rng-rank{rank}.pt"

    def save_checkpoint(self, path: Path, optimizer: bool = True) -> None:
        """Write a sharded checkpoint directory (collective: every rank calls it).

        Written under a temporary name, then `path` (if any) becomes `<path>.prev` and the new one
        `path`: at every moment one of the two is complete (`find_checkpoint`). `featmux.json` holds a
        digest of every file, checked before loading. `path` must be on a filesystem every rank sees.

        Args:
            path: the checkpoint directory.
            optimizer: include the optimizer state (needed to resume; not for a best-model copy).
        """
        env = self.env
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        dcp.save(self._app_state(optimizer), checkpoint_id=str(tmp))
        rng = {"featmux_format": FORMAT_VERSION, "rank": env.rank, "cpu": torch.get_rng_state()}
        if env.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(env.device)
        atomic_save(with_checksum(rng), tmp / self._rng_file(env.rank))
        dist.barrier()
        names = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != META_FILE)
        files = _digests(tmp, names, env)
        if env.is_main:
            meta = {
                "featmux_format": CHECKPOINT_FORMAT,
                "spec": self.spec,
                "train_state": asdict(self.state),
                "world_size": env.world_size,
                "optimizer": optimizer,
                "sharding": {
                    "optimizer": self.sharding.optimizer.kind.value,
                    "learning_rate": self.sharding.optimizer.learning_rate,
                    "plan": self.plan_report.to_markdown(),
                },
                "files": files,
            }
            write_json_atomic(tmp / META_FILE, meta)
            previous = _previous(path)
            if path.exists():  # a complete `path` stays until the new one is ready
                shutil.rmtree(previous, ignore_errors=True)
                os.replace(path, previous)
            os.replace(tmp, path)  # a crash between the two renames leaves `previous`: find_checkpoint
        dist.barrier()

    def _check(self, path: Path) -> str | None:
        """Why `path` is not a usable checkpoint (None: it is). Collective: every rank gets the same."""
        view: list[Any] = [None, {}]  # rank 0 reads the directory (one filesystem for all): reason, files
        if self.env.is_main:
            if not path.is_dir():
                view[0] = "missing"
            else:
                try:
                    meta = json.loads((path / META_FILE).read_text())
                    if meta.get("featmux_format") != CHECKPOINT_FORMAT:
                        view[0] = f"not a featmux distributed checkpoint (format {CHECKPOINT_FORMAT})"
                    present = {p.name for p in path.iterdir() if p.is_file()}
                    view[1] = dict(meta.get("files", {}))
                    missing = sorted(set(view[1]) - present)
                    if missing:
                        view[0] = f"files {missing[:3]} are missing"
                except (OSError, ValueError) as err:
                    view[0] = f"unreadable {META_FILE} ({type(err).__name__}: {err})"
        dist.broadcast_object_list(view, src=0)
        reason, files = view
        if reason is not None:
            return str(reason)
        found = _digests(path, sorted(files), self.env)
        bad = sorted(k for k, v in files.items() if found.get(k) != v)
        if bad:
            return f"corrupted: {bad[:3]} do not match their digests"
        return None

    def find_checkpoint(self, path: Path) -> tuple[Path | None, list[str]]:
        """The newest usable of `path` and `<path>.prev`, and one message per unusable newer one.

        Args:
            path: the checkpoint directory (e.g. `checkpoint_dir/last`).
        """
        damaged: list[str] = []
        for candidate in (path, _previous(path)):
            reason = self._check(candidate)
            if reason is None:
                return candidate, damaged
            if reason != "missing":
                damaged.append(f"{candidate}: {reason}")
            elif candidate == path and _previous(path).is_dir():
                damaged.append(f"{candidate}: missing (a save was interrupted between its two renames)")
        return None, damaged

    def load_checkpoint(self, path: Path) -> list[str]:
        """Restore weights, optimizer state, training state and RNG from `save_checkpoint` (collective).

        The checkpoint may come from another plan or world size: DCP reshards while reading (the
        per-rank RNG states then cannot be matched: each rank is reseeded from (seed, rank, step)).

        Returns:
            Notes for the `resumed` event (e.g. about the RNG).
        """
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        if meta["spec"] != json.loads(json.dumps(self.spec, default=str)):
            raise CheckpointError(f"{path}: the checkpoint holds a different model: {meta['spec']}")
        if meta["optimizer"]:
            self.optimizer.init_state()  # lazy optimizer state must exist to be loaded in place
        state = self._app_state(meta["optimizer"])
        dcp.load(state, checkpoint_id=str(path))
        self.dmp.load_state_dict(state["model"])
        if meta["optimizer"]:
            self.optimizer.load_state_dict(state["optimizer"])
        self.state = DistributedState(**meta["train_state"])
        self._set_learning_rates(self.state.learning_rate, self.state.table_learning_rate)
        env, notes = self.env, []
        rng_path = path / self._rng_file(env.rank)
        if meta["world_size"] == env.world_size and rng_path.is_file():
            rng = safe_load(rng_path)
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and env.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], env.device)
        else:
            torch.manual_seed(rank_seed(self.config.seed * 1_000_003 + self.state.step, env.rank))
            notes.append(
                f"RNG reseeded: the checkpoint was written by {meta['world_size']} rank(s), this run has "
                f"{env.world_size} (dropout masks differ from an uninterrupted run)"
            )
        return notes

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
        tables = (self.dmp.fused_optimizer, self._replicated_optimizer)
        for _, opt in self.optimizer.optimizers:
            lr = table_lr if any(opt is t for t in tables) else dense_lr
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

    def _resume(self, last: Path) -> int | None:
        """Continue from `last` (or its previous copy); the step resumed at, None when there is none."""
        found, damaged = self.find_checkpoint(last)
        if found is None:
            if damaged and any("missing" not in d for d in damaged):
                raise CheckpointError(
                    "no usable checkpoint to resume from: "
                    + "; ".join(damaged)
                    + f". Delete them (or use another checkpoint directory than {last.parent}) to start over."
                )
            return None
        notes = self.load_checkpoint(found)
        self._emit(
            {
                "event": "resumed",
                "from": str(found),
                "step": self.state.step,
                "skipped_damaged": damaged,
                "notes": notes,
            }
        )
        return self.state.step

    def fit(
        self, train: EncodedDataset, valid: EncodedDataset | None = None, resume: bool = True
    ) -> DistributedFitResult:
        """Train until `epochs`, `max_steps` or early stopping; the model ends with the best weights.

        Args:
            train: training split (every rank opens it and reads only its rows).
            valid: validation split for early stopping and AUC (None: keep the last weights).
            resume: continue from `checkpoint_dir/last` (or `last.prev`) if it exists; False deletes
                the checkpoints there and starts over.

        Raises:
            NonFiniteLossError: a non-finite loss under on_nonfinite=stop (on every rank).
            CheckpointError: checkpoints exist but none is usable, or one holds another model.
        """
        c, env = self.config, self.env
        last = self.checkpoint_dir / "last" if self.checkpoint_dir is not None else None
        if not resume and self.checkpoint_dir is not None:  # start over: no older run to fall back to
            if env.is_main:
                for name in ("last", "best"):
                    for old in (self.checkpoint_dir / name, _previous(self.checkpoint_dir / name)):
                        shutil.rmtree(old, ignore_errors=True)
            dist.barrier()
        resumed_from = self._resume(last) if resume and last is not None else None
        if resumed_from is None:
            torch.manual_seed(rank_seed(c.seed, env.rank))  # dropout: distinct masks on every rank
        s = self.state
        start_step = s.step
        batches_per_epoch = epoch_batches(len(train), c.batch_size)

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
                if part is None or (part.global_rows == 1 and c.batch_size > 1):  # as `epoch_batches`
                    break
                loss = self.train_step(part)
                if not np.isfinite(loss):
                    where = f"epoch {s.epoch}, global batch {s.batch_in_epoch} of the epoch"
                    self._nonfinite(part, loss, where)
                s.losses.append(loss)
                s.train_seconds += time.perf_counter() - started
                s.step += 1
                s.batch_in_epoch += 1
                s.train_rows += part.global_rows
                at_eval = c.eval_every_steps is not None and s.step % c.eval_every_steps == 0
                at_end = c.max_steps is not None and s.step >= c.max_steps
                at_save = c.checkpoint_every_steps is not None and s.step % c.checkpoint_every_steps == 0
                if at_eval or at_end:
                    self._evaluate(valid, batches_per_epoch)
                if last is not None and (at_eval or at_end or at_save):
                    self.save_checkpoint(last)
            if done():
                break
            s.epoch += 1
            s.batch_in_epoch = 0
            if c.eval_every_steps is None:
                self._evaluate(valid, batches_per_epoch)
            if last is not None:
                self.save_checkpoint(last)
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
            resumed_from_step=resumed_from,
            steps_this_launch=s.step - start_step,
            skipped_batches=s.skipped_batches,
        )

    def _restore_best(self, valid: EncodedDataset | None) -> None:
        s = self.state
        if valid is None or s.best_step == s.step or s.best_step < 0:
            return
        best = self.find_checkpoint(self.checkpoint_dir / "best")[0] if self.checkpoint_dir else None
        if best is not None:
            state = self._app_state(optimizer=False)
            dcp.load(state, checkpoint_id=str(best))
            self.dmp.load_state_dict(state["model"])
        elif self._best is not None:
            self._restore(self._best)


def check_train_config(config: TrainConfig, device_type: str) -> None:
    """Raise a ValueError for a `TrainConfig` option that distributed training would otherwise ignore.

    Args:
        config: the training options.
        device_type: "cpu" or "cuda", where the process group computes (config.device must match).
    """
    if config.optimizer is not OptimizerKind.ADAM:
        raise ValueError(
            f"optimizer {config.optimizer.value!r} does not apply with --distributed: the tables train with "
            "the fused --table-optimizer and the dense part with Adam (leave --optimizer at adam)"
        )
    if config.embedding_l2 > 0:
        raise ValueError("embedding_l2 is not supported with fused table optimizers (set it to 0)")
    if torch.device(config.device).type != device_type:
        raise ValueError(
            f"device {config.device!r}, but this process group computes on {device_type}: use --device cuda "
            "with the nccl backend, --device cpu with gloo"
        )
