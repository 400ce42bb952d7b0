"""Training options, validated when built."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, unique

import torch


@unique
class OptimizerKind(Enum):
    ADAM = "adam"  # dense Adam everywhere: right for small tables (every row is touched anyway)
    SPARSE_ADAM = "sparse_adam"  # SparseAdam on tables (only looked-up rows move), Adam on the dense part
    # lazy Adam fused on the rows a batch reads (featmux.training.optim.RowAdam; same update as SparseAdam,
    # no sparse gradient), Adam on the dense part: the fast choice for large tables
    ROW_ADAM = "row_adam"


@unique
class NonFinitePolicy(Enum):
    STOP = "stop"  # raise NonFiniteLossError naming the batch; the last checkpoint is intact to resume from
    SKIP = "skip"  # drop the batch without updating anything, count it, report it, go on


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Args:
        epochs: maximum passes over the training split.
        batch_size: rows per step.
        learning_rate: Adam learning rate (tables and dense part).
        embedding_l2: L2 penalty lambda/2 * ||w||^2 on embedding rows. With ADAM it covers every row of
            every table each step (as FuxiCTR's embedding_regularizer); with SPARSE_ADAM only the rows
            looked up in the batch (lazy L2), which keeps updates sparse; ROW_ADAM as SPARSE_ADAM.
        optimizer: ADAM, SPARSE_ADAM or ROW_ADAM (SparseAdam's update, fused on the rows read: fastest
            for large tables).
        patience: stop after this many evaluations without a better validation AUC.
        lr_decay: multiply the learning rate by this after an evaluation without improvement (1: off).
        eval_every_steps: evaluate every this many steps (None: at the end of each epoch).
        checkpoint_every_steps: also write the resumable checkpoint every this many steps.
        max_steps: stop after this many steps (None: no limit).
        max_grad_norm: clip the dense parameters' gradient norm (None: no clipping).
        eval_batch_size: rows per evaluation batch.
        seed: seeds data order and dropout.
        threads: torch intra-op threads (None: leave as is).
        progress: show a progress bar.
        on_nonfinite: what a batch with a NaN/Inf loss does: STOP the run (default) or SKIP the batch.
            Either way it never updates the weights, and it is reported with its location.
        autocast_bf16: run the forward pass under bf16 autocast (matmuls in bfloat16; on CPU worth it only
            with native bf16, e.g. AVX-512 BF16 or AMX; weights and optimizer stay float32). Off here;
            run configs (`featmux train`) decide it with `featmux.training.precision.resolve_bf16`.
        device: where the model and its optimizer state live, e.g. "cpu" or "cuda" (batches are read on
            the CPU and moved there). Runs on CUDA are not bit-for-bit deterministic.
    """

    epochs: int = 10
    batch_size: int = 4096
    learning_rate: float = 1e-3
    embedding_l2: float = 0.0
    optimizer: OptimizerKind = OptimizerKind.ADAM
    patience: int = 2
    lr_decay: float = 0.1
    eval_every_steps: int | None = None
    checkpoint_every_steps: int | None = None
    max_steps: int | None = None
    max_grad_norm: float | None = 10.0
    eval_batch_size: int = 16384
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    on_nonfinite: NonFinitePolicy = NonFinitePolicy.STOP
    autocast_bf16: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_device(self.device)
        object.__setattr__(self, "optimizer", OptimizerKind(self.optimizer))
        object.__setattr__(self, "on_nonfinite", NonFinitePolicy(self.on_nonfinite))
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in ("eval_every_steps", "checkpoint_every_steps", "max_steps", "threads", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if self.embedding_l2 < 0:
            raise ValueError(f"embedding_l2 must be >= 0, got {self.embedding_l2}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


def check_device(device: str) -> str:
    """`device` if torch can use it here, else a ValueError saying what to give instead.

    Args:
        device: a torch device string such as "cpu", "cuda" or "cuda:1".
    """
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); use 'cpu' or 'cuda'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is visible to torch here; use device 'cpu'")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: featmux trains on 'cpu' or 'cuda'")
    return device
