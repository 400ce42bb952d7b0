"""What `featmux bench speed` runs: its workloads, parts and contenders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LOCK = Path("/tmp/featmux-measure.lock")
# Criteo-like vocabularies: the Kaggle cardinalities with the five largest scaled to 0.8-1.1M values,


def repo_root() -> Path:
    """The featmux checkout this module runs from."""
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class DatasetSetup:
    """One training workload.

    Args:
        name: "frappe" or "synthetic".
        embedding_dim: D for every contender.
        epochs: epochs every contender trains (fixed, no early stopping; best validation epoch kept).
        method: featmux's embedding method ("collisionless" or "unified" at the peers' table rows).
    """

    name: str
    embedding_dim: int
    epochs: int
    method: str


@dataclass(frozen=True)
class SpeedConfig:
    """What `featmux bench speed` runs.

    Args:
        out_dir: where result files go.
        work_dir: exported arrays, caches and generated text files (reused by later runs).
        parts: any of "training", "embedding", "pipeline", "loop", "inference".
        datasets: training workloads.
        models: "deepfm" and/or "dcnv2".
        libraries: contenders of the training part (names of `contenders.all_contenders()`).
        frappe_dir: the Frappe libFM files.
        synthetic_rows: (train, valid, test) rows of the synthetic data.
        hidden: MLP widths.
        cross_layers: DCN-v2 cross layers (full rank, parallel structure).
        batch_size: rows per step.
        learning_rate: Adam learning rate, tables and dense part, every contender.
        threads: torch intra-op threads of every contender.
        seed: data order and initialisation.
        bf16: also train every contender that can (featmux, plain, the peers) under bf16 autocast, each
            right after its float32 run (None: where the CPU has native bf16).
        batch_norm: batch norm in every contender's MLP (torch-rechub's MLP always has it).
        pipeline_rows: rows of the generated Criteo and Avazu text files.
        loop_fit_epochs: epochs of each `Trainer.fit` of the loop part (a cap: not converged).
        repeats: interleaved repeats of the loop and inference parts' variants.
        inference_train_epochs: epochs the inference part's model trains before scoring (a cap).
        latency_calls: single-row calls timed per inference variant.
        lock: the measurement lock file (None: no lock).
        peers_python: the interpreter of the peers' venv.
    """

    out_dir: Path
    work_dir: Path
    parts: tuple[str, ...] = ("training", "embedding", "pipeline", "loop", "inference")
    datasets: tuple[DatasetSetup, ...] = (
        DatasetSetup("synthetic", 16, 2, "unified"),
        DatasetSetup("frappe", 10, 8, "collisionless"),
    )
    models: tuple[str, ...] = ("deepfm", "dcnv2")
    libraries: tuple[str, ...] = ("featmux", "plain", "deepctr", "rechub", "featmux-dense-adam")
    frappe_dir: Path = Path("../shared/data/frappe")
    synthetic_rows: tuple[int, int, int] = (600_000, 100_000, 100_000)
    hidden: tuple[int, ...] = (400, 400, 400)
    cross_layers: int = 3
    batch_size: int = 4096
    learning_rate: float = 1e-3
    threads: int = 2
    seed: int = 0
    bf16: bool | None = None
    batch_norm: bool = False
    pipeline_rows: int = 1_000_000
    loop_fit_epochs: int = 2
    repeats: int = 2
    inference_train_epochs: int = 1
    latency_calls: int = 500
    lock: Path | None = DEFAULT_LOCK
    peers_python: Path = field(default_factory=lambda: repo_root() / ".venv-peers" / "bin" / "python")
