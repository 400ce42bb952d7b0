"""`featmux bench speed`: featmux against its peers, side by side, in one run on one machine.

Three parts, each printed and saved under `benchmarks/results/` with the machine's description:

1. Training (`training`): DeepFM and DCN-v2 (same embedding dim, MLP, batch, Adam lr and threads) on
   Frappe and on Criteo-like synthetic data with large vocabularies, trained by featmux (its Trainer,
   `optimizer=row_adam`), a plain PyTorch baseline (nn.EmbeddingBag(sparse=True) + SparseAdam, featmux's
   dense layers), DeepCTR-Torch and torch-rechub (their own training APIs, in the separate venv of
   `benchmarks/speed/install_peers.sh`). Every contender reads the same numpy arrays (per-field ids
   and labels, exported once); reported: training samples/s, time to a common validation AUC, peak RSS
   and test AUC (at the best validation epoch).
2. Embedding layer alone (`embedding`): forward + backward + optimizer step, rows/s, of featmux's
   unified, hashing and collisionless layers against nn.EmbeddingBag and TorchRec.
3. Data pipeline (`pipeline`): rows/s from Criteo TSV and Avazu CSV text into tensors, first pass
   (parse, fingerprint, write the shard cache) and later epochs (read the cache).

Contenders run one after another, each in its own process holding the measurement lock (`flock` on
`/tmp/featmux-measure.lock` by default), never side by side: on a 2-core machine two torch jobs at once
slow each other down by an order of magnitude. Each records its threads and the load average. Nothing
here fails on timing: the numbers are printed and saved as measured.

    featmux bench speed                          # everything (about 40 minutes on 2 cores)
    featmux bench speed --part embedding --part pipeline
    python -m featmux.benchmarks.speed --help    # the same command without the featmux CLI
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
import typer
from torch import nn

from featmux.atomic import write_json_atomic
from featmux.data.cache import EncodedDataset
from featmux.data.encoded import EncodedChunk
from featmux.embeddings import (
    Budget,
    CollisionlessEmbedding,
    EmbeddingSpec,
    FeatureEmbedding,
    HashingEmbedding,
    UnifiedEmbedding,
    UnifiedEmbeddingConfig,
    build_embedding,
)
from featmux.embeddings.base import INIT_STD
from featmux.features import CategoricalFeature, Schema, ValueEncoding
from featmux.models import build_model
from featmux.sparse import SparseFeatures
from featmux.training.config import OptimizerKind, TrainConfig
from featmux.training.metrics import binary_metrics
from featmux.training.optim import RowAdam
from featmux.training.trainer import Trainer, evaluate

DEFAULT_LOCK = Path("/tmp/featmux-measure.lock")
# Criteo-like vocabularies: the Kaggle cardinalities with the five largest scaled to 0.8-1.1M values,
# 5.19M rows in all (embedding-bound: dense Adam would touch all of them at every step)
CRITEO_LIKE = (
    1460, 583, 1_000_000, 800_000, 305, 24, 12_517, 633, 3, 93_145, 5_683, 1_100_000, 3_194, 27,
    14_992, 900_000, 10, 5_652, 2_173, 4, 1_000_000, 18, 15, 286_181, 105, 142_572,
)  # fmt: skip
LIBRARIES = {
    "featmux": "featmux",
    "plain": "plain PyTorch (sparse)",
    "deepctr": "DeepCTR-Torch",
    "rechub": "torch-rechub",
}
PEERS = ("deepctr", "rechub")


def repo_root() -> Path:
    """The featmux checkout this module runs from."""
    return Path(__file__).resolve().parents[2]


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
        parts: any of "training", "embedding", "pipeline".
        datasets: training workloads.
        models: "deepfm" and/or "dcnv2".
        libraries: contenders of the training part.
        frappe_dir: the Frappe libFM files.
        synthetic_rows: (train, valid, test) rows of the synthetic data.
        hidden: MLP widths.
        cross_layers: DCN-v2 cross layers (full rank, parallel structure).
        batch_size: rows per step.
        learning_rate: Adam learning rate, tables and dense part, every contender.
        threads: torch intra-op threads of every contender.
        seed: data order and initialisation.
        bf16: also train featmux with bf16 autocast (an option; measured, with its AUC).
        batch_norm: batch norm in every contender's MLP (torch-rechub's MLP always has it).
        pipeline_rows: rows of the generated Criteo and Avazu text files.
        lock: the measurement lock file (None: no lock).
        peers_python: the interpreter of the peers' venv.
    """

    out_dir: Path
    work_dir: Path
    parts: tuple[str, ...] = ("training", "embedding", "pipeline")
    datasets: tuple[DatasetSetup, ...] = (
        DatasetSetup("synthetic", 16, 2, "unified"),
        DatasetSetup("frappe", 10, 8, "collisionless"),
    )
    models: tuple[str, ...] = ("deepfm", "dcnv2")
    libraries: tuple[str, ...] = ("featmux", "plain", "deepctr", "rechub")
    frappe_dir: Path = Path("../shared/data/frappe")
    synthetic_rows: tuple[int, int, int] = (600_000, 100_000, 100_000)
    hidden: tuple[int, ...] = (400, 400, 400)
    cross_layers: int = 3
    batch_size: int = 4096
    learning_rate: float = 1e-3
    threads: int = 2
    seed: int = 0
    bf16: bool = True
    batch_norm: bool = False
    pipeline_rows: int = 1_000_000
    lock: Path | None = DEFAULT_LOCK
    peers_python: Path = field(default_factory=lambda: repo_root() / ".venv-peers" / "bin" / "python")


# -- machine ---------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def gemm_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best FP32 GFLOP/s of a square `size` matmul on `threads` threads: the attainable peak we compare to."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        return 2 * size**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def machine(threads: int) -> dict[str, Any]:
    """Where the numbers were measured: CPU, cores, torch and its threads, flags, memory, load."""
    mem = None
    try:
        found = [ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")]
        mem = int(found[0].split()[1]) * 1024 if found else None
    except OSError:
        pass
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
        "bf16_native": any(f in _cpu_flags() for f in ("avx512_bf16", "amx_bf16")),
    }


@contextmanager
def measurement_lock(path: Path | None) -> Iterator[float]:
    """Hold the measurement lock (exclusive flock) for a timing run; yields the seconds waited for it."""
    if path is None:
        yield 0.0
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- data: exported once, read by every contender ----------------------------------------------------------


def _save_split(directory: Path, split: str, ids: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{split}.tmp.npz"
    np.savez(tmp, ids=ids.astype(np.int64), labels=labels.astype(np.float32))
    os.replace(tmp, directory / f"{split}.npz")


def export_frappe(frappe_dir: Path, out: Path, log: Callable[[str], None]) -> Path:
    """Frappe's train/validation/test files as per-field indices (0 = unseen in train) in `out`."""
    if (out / "meta.json").is_file():
        return out
    from featmux.data.prepare import prepare

    log(f"exporting Frappe from {frappe_dir}")
    data = prepare("frappe", frappe_dir, cache_root=out / "cache")
    names = data.schema.feature_names
    keys = [data.vocabulary[n].keys for n in names]
    for split, ds in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        assert ds is not None
        chunk = EncodedChunk.concat(list(ds.chunks()))
        ids = np.empty_like(chunk.ids)
        for i, k in enumerate(keys):
            pos = np.searchsorted(k, chunk.ids[:, i])
            hit = k[np.minimum(pos, k.size - 1)] == chunk.ids[:, i]
            ids[:, i] = np.where(hit, pos + 1, 0)
        _save_split(out, split, ids, chunk.labels)
    meta = {"dataset": "frappe", "fields": list(names), "vocab_sizes": [int(k.size) + 1 for k in keys]}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def export_synthetic(rows: tuple[int, int, int], seed: int, out: Path, log: Callable[[str], None]) -> Path:
    """Criteo-like synthetic rows (`CRITEO_LIKE` vocabularies, value id = index) split train/valid/test."""
    meta_path = out / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("rows") == list(rows):
        return out
    from featmux.data.synthetic import SyntheticConfig, iter_synthetic

    config = SyntheticConfig(cardinalities=CRITEO_LIKE, seed=seed)
    start = 0
    for split, n in zip(("train", "valid", "test"), rows, strict=True):
        log(f"generating {n:,} synthetic {split} rows")
        frames = list(iter_synthetic(config, n, start_row=start))
        ids = np.concatenate([f.select(config.feature_names).to_numpy() for f in frames])
        labels = np.concatenate([f.get_column("label").to_numpy() for f in frames])
        _save_split(out, split, ids, labels)
        start += n
    meta = {
        "dataset": "synthetic",
        "fields": list(config.feature_names),
        "vocab_sizes": list(CRITEO_LIKE),
        "rows": list(rows),
        "seed": seed,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def _schema(num_fields: int) -> Schema:
    return Schema("label", tuple(CategoricalFeature(f"f{i}", ValueEncoding.INT) for i in range(num_fields)))


def encoded_splits(data: Path) -> dict[str, EncodedDataset]:
    """The exported arrays as featmux shard caches (ids used as INT fingerprints).

    A cache is rebuilt whenever its source array changed (e.g. re-exported with other row counts), so
    featmux always trains on the very rows the peers read.
    """
    out = {}
    for split in ("train", "valid", "test"):
        source = data / f"{split}.npz"
        target = data / "featmux" / split
        stamp_file = data / "featmux" / f"{split}.source"
        stat = source.stat()
        stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        fresh = (target / "meta.json").is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp
        if not fresh:
            shutil.rmtree(target, ignore_errors=True)
            with np.load(source) as z:
                ids, labels = z["ids"], z["labels"]
            chunk = EncodedChunk(ids, (), np.zeros((ids.shape[0], 0), np.float32), labels)
            EncodedDataset.write(target, _schema(ids.shape[1]), [chunk])
            stamp_file.write_text(stamp)
        out[split] = EncodedDataset(target)
    return out


# -- contenders (each runs in its own process) ---------------------------------------------------------------


def _model_options(spec: dict[str, Any]) -> dict[str, Any]:
    options = {"hidden": list(spec["hidden"]), "batch_norm": bool(spec.get("batch_norm", False))}
    if spec["model"] == "deepfm":
        return options
    return {**options, "cross_layers": spec["cross_layers"], "structure": "parallel"}


def _run_featmux(spec: dict[str, Any]) -> dict[str, Any]:
    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text())
    splits = encoded_splits(data)
    schema = splits["train"].schema
    torch.manual_seed(spec["seed"])
    dim = spec["embedding_dim"]
    if spec["method"] == "unified":  # the same number of rows as the peers' tables
        emb_spec = EmbeddingSpec("unified", dim, Budget(rows=sum(meta["vocab_sizes"])))
        vocabulary = None
    else:
        emb_spec = EmbeddingSpec("collisionless", dim)
        vocabulary = splits["train"].fit_vocabulary()
    embedding = build_embedding(schema.categorical, emb_spec, vocabulary)
    model = build_model(spec["model"], embedding, 0, _model_options(spec))
    config = TrainConfig(
        epochs=spec["epochs"],
        batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"],
        optimizer=OptimizerKind(spec.get("optimizer", "row_adam")),
        patience=spec["epochs"] + 1,
        lr_decay=1.0,
        max_grad_norm=None,
        seed=spec["seed"],
        threads=spec["threads"],
        progress=False,
        autocast_bf16=bool(spec.get("bf16", False)),
    )
    history: list[dict[str, float]] = []
    trainer: Trainer | None = None

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "eval" and trainer is not None:
            history.append(
                {
                    "epoch": float(event["epoch"]),
                    "train_seconds": trainer.state.train_seconds,
                    "valid_auc": float(event["valid_auc"]),
                    "valid_logloss": float(event["valid_logloss"]),
                }
            )
            print(
                f"[featmux {spec['model']}] epoch {event['epoch']:.0f}: {trainer.state.train_seconds:.1f}s "
                f"valid AUC {event['valid_auc']:.5f}",
                file=sys.stderr,
                flush=True,
            )

    trainer = Trainer(model, config, schema, on_event=on_event)
    trainer.fit(splits["train"], splits["valid"])
    test = evaluate(model, splits["test"])
    best = max(history, key=lambda h: h["valid_auc"])
    best["test_auc"], best["test_logloss"] = test.auc, test.logloss
    return {
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "embedding_parameters": embedding.num_parameters(),
        "dense_flops_per_sample": dense_flops_per_sample(model),
        "notes": [f"{embedding.method} embedding, optimizer {config.optimizer.value}, Trainer + shard cache"]
        + (["bf16 autocast"] if config.autocast_bf16 else []),
    }


class PlainEmbeddingBag(FeatureEmbedding):
    """The plain PyTorch baseline's layer: one nn.EmbeddingBag(sparse=True) over per-field offset ids.

    Args:
        features: the categorical features (ids are per-field indices in [0, V_f)).
        embedding_dim: D.
        vocab_sizes: V_f per feature, in feature order.

    Example:
        >>> layer = PlainEmbeddingBag(schema.categorical, 16, [1000, 50])
    """

    method = "plain-embeddingbag"

    def __init__(
        self, features: Sequence[CategoricalFeature], embedding_dim: int, vocab_sizes: Sequence[int]
    ):
        super().__init__(features, embedding_dim)
        self.bag = nn.EmbeddingBag(int(sum(vocab_sizes)), embedding_dim, mode="sum", sparse=True)
        nn.init.normal_(self.bag.weight, std=INIT_STD)
        starts = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])
        self.register_buffer("starts", torch.tensor(starts, dtype=torch.int64), persistent=False)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(f"{f.name}#0" for f in self.features)

    def config(self) -> dict[str, Any]:
        return {"method": self.method}

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.bag.weight]

    def forward(self, sparse: SparseFeatures) -> torch.Tensor:
        """ids [B, F] -> [B, F, D] (each id a bag of one)."""
        ids = sparse.ids + self.starts  # [B, F]
        return self.bag(ids.reshape(-1, 1)).view(ids.shape[0], ids.shape[1], -1)


def _run_plain(spec: dict[str, Any]) -> dict[str, Any]:
    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text())
    arrays = {}
    for split in ("train", "valid", "test"):
        with np.load(data / f"{split}.npz") as z:
            arrays[split] = (torch.from_numpy(z["ids"]), torch.from_numpy(z["labels"]))
    num_fields = arrays["train"][0].shape[1]
    torch.manual_seed(spec["seed"])
    embedding = PlainEmbeddingBag(_schema(num_fields).categorical, spec["embedding_dim"], meta["vocab_sizes"])
    model = build_model(spec["model"], embedding, 0, _model_options(spec))
    sparse_opt = torch.optim.SparseAdam(embedding.table_parameters(), lr=spec["learning_rate"])
    dense_opt = torch.optim.Adam(model.dense_parameters(), lr=spec["learning_rate"])
    no_dense = torch.zeros(spec["batch_size"], 0)

    @torch.no_grad()
    def metrics(split: str) -> tuple[float, float]:
        model.eval()
        ids, labels = arrays[split]
        parts = [
            model(SparseFeatures(ids[i : i + 16384]), torch.zeros(min(16384, ids.shape[0] - i), 0))
            for i in range(0, ids.shape[0], 16384)
        ]
        logits = torch.cat(parts)
        model.train()
        m = binary_metrics(labels.numpy(), logits.numpy())
        return m.auc, m.logloss

    ids, labels = arrays["train"]
    generator = torch.Generator().manual_seed(spec["seed"])
    history, seconds = [], 0.0
    for epoch in range(spec["epochs"]):
        start = time.perf_counter()
        order = torch.randperm(ids.shape[0], generator=generator)
        for i in range(0, ids.shape[0], spec["batch_size"]):
            index = order[i : i + spec["batch_size"]]
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            logits = model(SparseFeatures(ids[index]), no_dense[: index.numel()])
            F.binary_cross_entropy_with_logits(logits, labels[index]).backward()
            sparse_opt.step()
            dense_opt.step()
        seconds += time.perf_counter() - start
        valid_auc, valid_loss = metrics("valid")
        test_auc, test_loss = metrics("test")
        history.append(
            {
                "epoch": epoch + 1,
                "train_seconds": seconds,
                "valid_auc": valid_auc,
                "valid_logloss": valid_loss,
                "test_auc": test_auc,
                "test_logloss": test_loss,
            }
        )
        print(
            f"[plain {spec['model']}] epoch {epoch + 1}: {seconds:.1f}s valid AUC {valid_auc:.5f}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "notes": [
            "nn.EmbeddingBag(sparse=True) + SparseAdam, Adam on featmux's dense layers, in-memory batches"
        ],
    }


def dense_flops_per_sample(model: nn.Module) -> int:
    """FLOPs of one training sample in the model's linear layers: 2 * in * out each, x3 for fwd + bwd.

    Backward costs two matmuls per layer (input and weight gradients; the first layer's input gradient
    is needed for the embeddings), so a training step is 3x the forward. Elementwise work is not counted.
    """
    return sum(6 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def run_contender(spec_path: Path, result_path: Path) -> None:
    """Entry of a contender process (featmux or plain): train as `spec` says, write the result JSON."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    load = os.getloadavg()
    runner = _run_featmux if spec["library"] == "featmux" else _run_plain
    result = runner(spec)
    result.update(
        {
            "threads": torch.get_num_threads(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "loadavg_start": load,
            "loadavg_end": os.getloadavg(),
            "versions": {"torch": torch.__version__},
        }
    )
    write_json_atomic(result_path, result)


# -- embedding layer alone -----------------------------------------------------------------------------------


def _embedding_variants(ids: torch.Tensor, vocab_sizes: Sequence[int], dim: int) -> dict[str, Any]:
    """name -> (module, step function) for every layer measured; ids [B, F] per-field indices."""
    num_fields = ids.shape[1]
    features = _schema(num_fields).categorical
    total = int(sum(vocab_sizes))
    variants: dict[str, Callable[[], Callable[[torch.Tensor], None]]] = {}

    def featmux_layer(layer: FeatureEmbedding, optimizer: str) -> Callable[[torch.Tensor], None]:
        if optimizer == "row_adam":
            opt: torch.optim.Optimizer = RowAdam(layer.table_modules(), lr=1e-3)
        elif optimizer == "sparse_adam":
            layer.set_sparse_gradients(True)
            opt = torch.optim.SparseAdam(layer.table_parameters(), lr=1e-3)
        else:
            opt = torch.optim.Adam(layer.table_parameters(), lr=1e-3)

        def step(batch: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            out = layer(SparseFeatures(batch))  # [B, F, D]
            out.backward(torch.ones_like(out))
            opt.step()

        return step

    def unified() -> UnifiedEmbedding:
        return UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=total, embedding_dim=dim))

    def hashing() -> HashingEmbedding:
        return HashingEmbedding(
            features, dim, {f.name: int(v) for f, v in zip(features, vocab_sizes, strict=True)}
        )

    def collisionless() -> CollisionlessEmbedding:
        from featmux.embeddings import Vocabulary

        vocab = Vocabulary([f.name for f in features])
        for i, f in enumerate(features):
            vocab.update(
                f.name, np.arange(vocab_sizes[i], dtype=np.int64)
            )  # every value known, as the peers'
        return CollisionlessEmbedding.from_vocabulary(features, vocab, dim)

    variants["featmux unified (row_adam)"] = lambda: featmux_layer(unified(), "row_adam")
    variants["featmux hashing (row_adam)"] = lambda: featmux_layer(hashing(), "row_adam")
    variants["featmux collisionless (row_adam)"] = lambda: featmux_layer(collisionless(), "row_adam")
    variants["featmux unified (sparse_adam, before)"] = lambda: featmux_layer(unified(), "sparse_adam")

    def plain_bag(sparse: bool) -> Callable[[torch.Tensor], None]:
        bag = nn.EmbeddingBag(total, dim, mode="sum", sparse=sparse)
        starts = torch.tensor(np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]), dtype=torch.int64)
        opt: torch.optim.Optimizer = (
            torch.optim.SparseAdam(bag.parameters(), lr=1e-3)
            if sparse
            else torch.optim.Adam(bag.parameters(), lr=1e-3)
        )

        def step(batch: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            out = bag((batch + starts).reshape(-1, 1))  # [B * F, D]
            out.backward(torch.ones_like(out))
            opt.step()

        return step

    variants["nn.EmbeddingBag sparse + SparseAdam"] = lambda: plain_bag(True)
    variants["nn.EmbeddingBag dense + Adam"] = lambda: plain_bag(False)
    variants["TorchRec FusedEmbeddingBagCollection (Adam)"] = lambda: _torchrec_step(vocab_sizes, dim, "adam")
    variants["TorchRec FusedEmbeddingBagCollection (row-wise Adagrad)"] = lambda: _torchrec_step(
        vocab_sizes, dim, "rowwise_adagrad"
    )
    variants["TorchRec EmbeddingBagCollection + Adam"] = lambda: _torchrec_step(vocab_sizes, dim, "ebc_adam")
    return variants


def _torchrec_step(vocab_sizes: Sequence[int], dim: int, kind: str) -> Callable[[torch.Tensor], None]:
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
    from torchrec.optim import RowWiseAdagrad as TrecRowWiseAdagrad
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    keys = [f"f{i}" for i in range(len(vocab_sizes))]
    tables = [
        EmbeddingBagConfig(name=f"t{i}", embedding_dim=dim, num_embeddings=int(v), feature_names=[k])
        for i, (k, v) in enumerate(zip(keys, vocab_sizes, strict=True))
    ]
    opt: torch.optim.Optimizer | None = None
    if kind == "ebc_adam":
        module: nn.Module = EmbeddingBagCollection(tables=tables)
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    else:
        optim_type = torch.optim.Adam if kind == "adam" else TrecRowWiseAdagrad
        lr = 1e-3 if kind == "adam" else 0.05
        module = FusedEmbeddingBagCollection(
            tables=tables, optimizer_type=optim_type, optimizer_kwargs={"lr": lr}
        )
    cache: dict[int, Any] = {}

    def step(batch: torch.Tensor) -> None:
        key = batch.data_ptr()
        if key not in cache:  # inputs are converted once, outside the timing (as for every variant)
            cache[key] = KeyedJaggedTensor.from_lengths_sync(
                keys=keys, values=batch.t().reshape(-1), lengths=torch.ones(batch.numel(), dtype=torch.int32)
            )
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        out = module(cache[key]).values()  # [B, F * D]
        out.backward(torch.ones_like(out))  # a fused module updates its rows here
        if opt is not None:
            opt.step()

    return step


def run_embedding_bench(spec_path: Path, result_path: Path) -> None:
    """Entry of the embedding-layer process: time each layer's forward + backward + update."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text())
    with np.load(data / "train.npz") as z:
        ids = torch.from_numpy(z["ids"][: spec["batch_size"] * spec["batches"]])
    batches = list(ids.split(spec["batch_size"]))
    starts = torch.tensor(np.concatenate([[0], np.cumsum(meta["vocab_sizes"])[:-1]]), dtype=torch.int64)
    results = []
    for name, make in _embedding_variants(ids, meta["vocab_sizes"], spec["embedding_dim"]).items():
        steps = (
            spec["steps"]
            if "dense" not in name and "EmbeddingBagCollection +" not in name
            else spec["dense_steps"]
        )
        load = os.getloadavg()
        try:
            step = make()
            for b in batches[:3]:
                step(b)
            start = time.perf_counter()
            for i in range(steps):
                step(batches[i % len(batches)])
            seconds = (time.perf_counter() - start) / steps
            entry: dict[str, Any] = {
                "layer": name,
                "ms_per_step": seconds * 1e3,
                "rows_per_s": spec["batch_size"] / seconds,
            }
        except Exception as err:
            entry = {"layer": name, "error": f"{type(err).__name__}: {err}"[:300]}
        entry.update({"steps": steps, "loadavg": load})
        print(f"[embedding] {entry}", file=sys.stderr, flush=True)
        results.append(entry)
        del make
    write_json_atomic(
        result_path,
        {
            "layers": results,
            "batch_size": spec["batch_size"],
            "fields": ids.shape[1],
            "embedding_dim": spec["embedding_dim"],
            "table_rows": int(sum(meta["vocab_sizes"])),
            "unique_rows_per_batch": float(np.mean([torch.unique(b + starts).numel() for b in batches])),
            "threads": torch.get_num_threads(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        },
    )


# -- data pipeline alone -------------------------------------------------------------------------------------


def write_criteo_tsv(path: Path, rows: int, seed: int = 0) -> Path:
    """A Kaggle-layout Criteo file (label, I1..I13, C1..C26; tab separated; ~4% empty fields)."""
    import polars as pl

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {"label": (rng.random(rows) < 0.25).astype(np.int8)}
    for j in range(13):
        values = np.floor(np.exp(rng.normal(1.0 + j % 4, 1.5, rows))).astype(np.int64)
        columns[f"I{j + 1}"] = pl.Series(values).set(pl.Series(rng.random(rows) < 0.04), None)
    for j, card in enumerate(CRITEO_LIKE):
        distinct = min(card, 50_000)
        vocab = pl.Series([f"{v:08x}" for v in rng.integers(0, 1 << 32, distinct)])
        pick = np.minimum((np.power(distinct + 1.0, rng.random(rows))).astype(np.int64) - 1, distinct - 1)
        columns[f"C{j + 1}"] = vocab.gather(pick).set(pl.Series(rng.random(rows) < 0.04), None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pl.DataFrame(columns).write_csv(tmp, separator="\t", include_header=False, null_value="")
    os.replace(tmp, path)
    return path


def write_avazu_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """An Avazu-layout CSV with header (id, click, hour, C1, ..., C21): hex ids, small ints, 10 days."""
    import polars as pl

    from featmux.data.readers.avazu import COLUMNS, STRING_FIELDS

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {
        "id": pl.Series(rng.integers(0, 1 << 63, rows, dtype=np.int64)).cast(pl.UInt64),
        "click": (rng.random(rows) < 0.17).astype(np.int8),
        "hour": 14102100 + 100 * rng.integers(0, 10, rows) + rng.integers(0, 24, rows),
    }
    for name in COLUMNS[3:]:
        if name in STRING_FIELDS:
            distinct = 100_000 if name in ("device_ip", "device_id") else 5_000
            vocab = pl.Series([f"{v:08x}" for v in rng.integers(0, 1 << 32, distinct)])
            pick = np.minimum((np.power(distinct + 1.0, rng.random(rows))).astype(np.int64) - 1, distinct - 1)
            columns[name] = vocab.gather(pick)
        else:
            columns[name] = rng.integers(0, 2_000, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pl.DataFrame(columns).select(COLUMNS).write_csv(tmp)
    os.replace(tmp, path)
    return path


def _pipeline_one(name: str, path: Path, cache: Path, batch_size: int) -> dict[str, Any]:
    import shutil

    from featmux.data.cache import chunk_to_batch
    from featmux.data.encoded import encode_frame
    from featmux.data.readers.avazu import avazu_chunks, avazu_schema
    from featmux.data.readers.criteo import criteo_chunks, criteo_schema

    chunks, schema = (criteo_chunks, criteo_schema()) if name == "criteo" else (avazu_chunks, avazu_schema())
    out: dict[str, Any] = {"format": name, "file_bytes": path.stat().st_size}

    start = time.perf_counter()
    rows = 0
    for chunk in chunks(path):
        batch = chunk_to_batch(encode_frame(chunk.frame, schema))  # text -> fingerprints -> tensors
        rows += len(batch)
    out["rows"] = rows
    out["parse_to_tensors_rows_per_s"] = rows / (time.perf_counter() - start)

    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    EncodedDataset.write(cache, schema, (encode_frame(c.frame, schema) for c in chunks(path)))
    out["first_pass_rows_per_s"] = rows / (time.perf_counter() - start)  # parse + fingerprint + write cache

    dataset = EncodedDataset(cache)
    for epoch in range(2):  # epochs after the first: shards from the cache, shuffled batches as tensors
        start = time.perf_counter()
        seen = sum(len(b) for b in dataset.batches(batch_size, shuffle=True, seed=0, epoch=epoch))
        out[f"cached_epoch{epoch + 1}_rows_per_s"] = seen / (time.perf_counter() - start)
    out["cached_rows_per_s"] = max(out["cached_epoch1_rows_per_s"], out["cached_epoch2_rows_per_s"])
    out["cache_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return out


def run_pipeline_bench(spec_path: Path, result_path: Path) -> None:
    """Entry of the data-pipeline process: rows/s from Criteo TSV and Avazu CSV into tensors."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    work = Path(spec["work"])
    rows = spec["rows"]
    files = {
        "criteo": write_criteo_tsv(work / f"criteo-{rows}.tsv", rows),
        "avazu": write_avazu_csv(work / f"avazu-{rows}.csv", rows),
    }
    results = []
    for name, path in files.items():
        load = os.getloadavg()
        entry = _pipeline_one(name, path, work / f"cache-{name}", spec["batch_size"])
        entry["loadavg"] = load
        print(f"[pipeline] {entry}", file=sys.stderr, flush=True)
        results.append(entry)
    write_json_atomic(result_path, {"formats": results, "threads": torch.get_num_threads()})


# -- the driver ----------------------------------------------------------------------------------------------


def _subprocess(
    argv: list[str], spec: dict[str, Any], work: Path, tag: str, lock: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """Run one measurement process under the lock; its result JSON (or the error) comes back."""
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = runs / f"{tag}.spec.json", runs / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    result_path.unlink(missing_ok=True)
    with measurement_lock(lock) as waited:
        log(f"{tag}: running (waited {waited:.0f}s for the lock, load {os.getloadavg()[0]:.2f})")
        started = time.perf_counter()
        proc = subprocess.run(
            [*argv, str(spec_path), str(result_path)], cwd=repo_root(), capture_output=True, text=True
        )
        wall = time.perf_counter() - started
    if proc.returncode != 0 or not result_path.is_file():
        log(f"{tag}: FAILED ({proc.returncode})\n{proc.stderr[-3000:]}")
        return {"error": proc.stderr[-3000:] or f"exit code {proc.returncode}", "wall_seconds": wall}
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = wall
    result["lock_wait_seconds"] = waited
    return result


def _training_specs(config: SpeedConfig) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for setup in config.datasets:
        for model in config.models:
            base = {
                "dataset": setup.name,
                "model": model,
                "data": str(config.work_dir / setup.name),
                "embedding_dim": setup.embedding_dim,
                "epochs": setup.epochs,
                "hidden": list(config.hidden),
                "cross_layers": config.cross_layers,
                "batch_size": config.batch_size,
                "learning_rate": config.learning_rate,
                "threads": config.threads,
                "seed": config.seed,
                "init_std": INIT_STD,
                "batch_norm": config.batch_norm,
            }
            for library in config.libraries:
                spec = {**base, "library": library}
                if library == "featmux":
                    spec["method"] = setup.method
                specs.append((f"{setup.name}-{model}-{library}", spec))
                if library == "featmux" and config.bf16 and setup.name == "frappe" and model == "deepfm":
                    # an option, measured briefly: without native bf16 (AVX-512 BF16 / AMX) it is emulated
                    bf16 = {**spec, "bf16": True, "epochs": 1}
                    specs.append((f"{setup.name}-{model}-featmux-bf16", bf16))
    return specs


def _summarise_training(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: samples/s, best validation epoch's test AUC, and time to the group's common valid AUC."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["model"]), []).append(run)
    rows = []
    for (dataset, model), members in groups.items():
        ok = [m for m in members if m.get("history")]
        target = min((max(h["valid_auc"] for h in m["history"]) for m in ok), default=float("nan"))
        for m in members:
            row: dict[str, Any] = {"dataset": dataset, "model": model, "contender": m["contender"]}
            if not m.get("history"):
                rows.append({**row, "error": m.get("error", "no result")})
                continue
            hist = m["history"]
            last = hist[-1]
            best = max(hist, key=lambda h: h["valid_auc"])
            reached = next((h for h in hist if h["valid_auc"] >= target), None)
            row.update(
                {
                    "samples_per_s": m["train_rows"] * len(hist) / last["train_seconds"],
                    "train_seconds": last["train_seconds"],
                    "epochs": len(hist),
                    "best_valid_auc": best["valid_auc"],
                    "valid_auc_by_epoch": [h["valid_auc"] for h in hist],
                    "test_auc": best.get("test_auc"),
                    "test_logloss": best.get("test_logloss"),
                    "target_valid_auc": target,
                    "seconds_to_target": reached["train_seconds"] if reached else None,
                    "peak_rss_bytes": m.get("peak_rss_bytes"),
                    "threads": m.get("threads"),
                    "loadavg_start": m.get("loadavg_start"),
                    "loadavg_end": m.get("loadavg_end"),
                    "parameters": m.get("parameters"),
                    "notes": m.get("notes", []),
                }
            )
            if m.get("dense_flops_per_sample"):
                row["dense_flops_per_sample"] = m["dense_flops_per_sample"]
                row["achieved_gflops"] = m["dense_flops_per_sample"] * row["samples_per_s"] / 1e9
            rows.append(row)
    return rows


def _ratios(training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """featmux / best peer (and / plain baseline) per workload, with the AUCs side by side."""
    out = []
    keys = sorted({(r["dataset"], r["model"]) for r in training})
    for dataset, model in keys:
        rows = {
            r["contender"]: r
            for r in training
            if (r["dataset"], r["model"]) == (dataset, model) and "error" not in r
        }
        mine = rows.get("featmux")
        peers = [rows[p] for p in PEERS if p in rows]
        if mine is None:
            continue
        best_peer = max(peers, key=lambda r: r["samples_per_s"]) if peers else None
        entry: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "featmux_samples_per_s": mine["samples_per_s"],
            "featmux_test_auc": mine["test_auc"],
        }
        if best_peer is not None:
            entry.update(
                {
                    "best_peer": best_peer["contender"],
                    "best_peer_samples_per_s": best_peer["samples_per_s"],
                    "best_peer_test_auc": best_peer["test_auc"],
                    "speedup_vs_best_peer": mine["samples_per_s"] / best_peer["samples_per_s"],
                    "auc_delta_vs_best_peer_test": mine["test_auc"] - max(p["test_auc"] for p in peers),
                }
            )
            fast_peer = [p for p in peers if p.get("seconds_to_target")]
            if mine.get("seconds_to_target") and fast_peer:
                entry["time_to_auc_speedup_vs_best_peer"] = (
                    min(p["seconds_to_target"] for p in fast_peer) / mine["seconds_to_target"]
                )
        if "plain" in rows:
            entry["speedup_vs_plain"] = mine["samples_per_s"] / rows["plain"]["samples_per_s"]
            entry["plain_test_auc"] = rows["plain"]["test_auc"]
        if "featmux-bf16" in rows:
            entry["bf16_speedup"] = rows["featmux-bf16"]["samples_per_s"] / mine["samples_per_s"]
            entry["bf16_test_auc"] = rows["featmux-bf16"]["test_auc"]
            bf16_epochs = rows["featmux-bf16"]["epochs"]
            entry["bf16_valid_auc"] = rows["featmux-bf16"]["valid_auc_by_epoch"][-1]
            entry["fp32_valid_auc_same_epochs"] = mine["valid_auc_by_epoch"][
                min(bf16_epochs, mine["epochs"]) - 1
            ]
        out.append(entry)
    return out


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _ratio_rows(ratios: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in ratios:
        aucs = [r["featmux_test_auc"], r.get("best_peer_test_auc"), r.get("plain_test_auc")]
        rows.append(
            [
                r["dataset"],
                r["model"],
                _fmt(r["featmux_samples_per_s"]),
                LIBRARIES.get(r.get("best_peer", ""), "-"),
                _fmt(r.get("best_peer_samples_per_s")),
                _fmt(r.get("speedup_vs_best_peer"), ".2f") + "x",
                _fmt(r.get("speedup_vs_plain"), ".2f") + "x",
                _fmt(r.get("time_to_auc_speedup_vs_best_peer"), ".2f") + "x",
                " / ".join(_fmt(a, ".4f") for a in aucs),
            ]
        )
    return rows


def _training_rows(training: list[dict[str, Any]], peak: float) -> list[list[str]]:
    rows = []
    for r in training:
        name = LIBRARIES.get(r["contender"], r["contender"])
        if "error" in r:
            rows.append(
                [r["dataset"], r["model"], name, "error: " + r["error"][-100:].replace("|", "/")] + [""] * 7
            )
            continue
        flops = "-"
        if "achieved_gflops" in r:
            flops = f"{r['achieved_gflops']:.0f} ({100 * r['achieved_gflops'] / peak:.0f}%)"
        rows.append(
            [
                r["dataset"],
                r["model"],
                name,
                _fmt(r["samples_per_s"]),
                str(r["epochs"]),
                _fmt(r["best_valid_auc"], ".4f"),
                _fmt(r["test_auc"], ".4f"),
                f"{_fmt(r['seconds_to_target'], '.1f')} (>= {_fmt(r['target_valid_auc'], '.4f')})",
                _fmt((r["peak_rss_bytes"] or 0) / 2**20),
                flops,
                f"{r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}",
            ]
        )
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what `featmux bench speed` prints and saves)."""
    m = report["machine"]
    peak = report.get("gemm_peak_gflops") or float("nan")
    lines = [
        f"# featmux speed, {report['created']}",
        "",
        f"Machine: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores, torch {m['torch']}, "
        f"{m['threads']} threads, load average at start {m['loadavg'][0]:.2f}. FP32 GEMM peak measured: "
        f"{_fmt(peak, '.0f')} GFLOP/s (2048^3 matmul, {m['threads']} threads). Contenders ran one after "
        "another, each alone in its process, under the measurement lock.",
        "",
    ]
    if report.get("ratios"):
        header = ["dataset", "model", "featmux samples/s", "best peer", "peer samples/s", "speedup"]
        header += ["vs plain sparse", "time-to-AUC speedup", "test AUC featmux / peer / plain"]
        lines += ["## Ratios (featmux / best peer, one run)", ""]
        lines += [*_table(header, _ratio_rows(report["ratios"])), ""]
        bf16 = [r for r in report["ratios"] if "bf16_speedup" in r]
        for r in bf16:
            lines.append(
                f"bf16 autocast ({r['dataset']} {r['model']}): {r['bf16_speedup']:.2f}x fp32's speed, "
                f"valid AUC {r['bf16_valid_auc']:.4f} vs fp32 {r['fp32_valid_auc_same_epochs']:.4f} after "
                f"the same epochs (native bf16: {m['bf16_native']})."
            )
        lines += [""] if bf16 else []
    if report.get("training"):
        header = ["dataset", "model", "contender", "samples/s", "epochs", "best valid AUC", "test AUC"]
        header += [
            "s to valid AUC target",
            "peak RSS MiB",
            "dense GFLOP/s (% of GEMM peak)",
            "load start/end",
        ]
        lines += ["## Training runs", "", *_table(header, _training_rows(report["training"], peak)), ""]
    emb = report.get("embedding")
    if emb and emb.get("layers"):
        ok = [x for x in emb["layers"] if "rows_per_s" in x]
        ref = next((x for x in ok if x["layer"].startswith("nn.EmbeddingBag sparse")), None)
        rows = []
        for x in emb["layers"]:
            if "error" not in x:
                rel = f"{x['ms_per_step'] / ref['ms_per_step']:.2f}x" if ref else "-"
                rows.append([x["layer"], f"{x['ms_per_step']:.1f}", _fmt(x["rows_per_s"]), rel])
            else:
                rows.append([x["layer"], "error: " + x["error"][:100].replace("|", "/"), "", ""])
        lines += [
            f"## Embedding layer alone: forward + backward + update, batch {emb['batch_size']}, "
            f"{emb['fields']} fields, dim {emb['embedding_dim']}, {emb['table_rows']:,} rows "
            f"(~{emb['unique_rows_per_batch']:,.0f} distinct per batch)",
            "",
        ]
        lines += [*_table(["layer", "ms/step", "rows/s", "time vs nn.EmbeddingBag sparse"], rows), ""]
    pipe = report.get("pipeline")
    if pipe and pipe.get("formats"):
        header = ["format", "rows", "parse to tensors", "first pass (parse + fingerprint + write cache)"]
        header += ["cached epochs (shuffled batches)"]
        rows = [
            [
                x["format"],
                f"{x['rows']:,}",
                _fmt(x["parse_to_tensors_rows_per_s"]),
                _fmt(x["first_pass_rows_per_s"]),
                _fmt(x["cached_rows_per_s"]),
            ]
            for x in pipe["formats"]
        ]
        lines += ["## Data pipeline: rows/s into tensors", "", *_table(header, rows), ""]
    return "\n".join(lines)


def run_speed(config: SpeedConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark parts of `config` one after another; save JSON and Markdown; return the report."""
    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report: dict[str, Any] = {
        "created": created,
        "config": json.loads(json.dumps(asdict(config), default=str)),
    }
    report["machine"] = machine(config.threads)
    with measurement_lock(config.lock):
        report["gemm_peak_gflops"] = gemm_peak_gflops(config.threads)
    me = [sys.executable, "-m", "featmux.benchmarks.speed"]
    needs_synthetic = "embedding" in config.parts or any(s.name == "synthetic" for s in config.datasets)
    if needs_synthetic:
        export_synthetic(config.synthetic_rows, config.seed, work / "synthetic", log)
    if "training" in config.parts:
        if any(s.name == "frappe" for s in config.datasets):
            export_frappe(config.frappe_dir, work / "frappe", log)
        for setup in config.datasets:
            encoded_splits(work / setup.name)  # featmux's shard cache, written before any timing
        runs = []
        for tag, spec in _training_specs(config):
            library = spec["library"]
            if library in PEERS:
                if not config.peers_python.exists():
                    runs.append(
                        {
                            **spec,
                            "contender": library,
                            "error": f"no peers venv at {config.peers_python}: "
                            "run benchmarks/speed/install_peers.sh",
                        }
                    )
                    continue
                argv = [str(config.peers_python), str(repo_root() / "benchmarks" / "speed" / "peers.py")]
            else:
                argv = [*me, "contender"]
            result = _subprocess(argv, spec, work, tag, config.lock, log)
            contender = library + ("-bf16" if spec.get("bf16") else "")
            with np.load(Path(spec["data"]) / "train.npz") as z:
                train_rows = int(z["labels"].shape[0])
            runs.append({**spec, **result, "contender": contender, "train_rows": train_rows})
        report["training_runs"] = runs
        report["training"] = _summarise_training(runs)
        report["ratios"] = _ratios(report["training"])
    if "embedding" in config.parts:
        spec = {
            "data": str(work / "synthetic"),
            "threads": config.threads,
            "batch_size": config.batch_size,
            "batches": 8,
            "steps": 30,
            "dense_steps": 3,
            "embedding_dim": 16,
        }
        report["embedding"] = _subprocess([*me, "embedding"], spec, work, "embedding", config.lock, log)
    if "pipeline" in config.parts:
        spec = {
            "work": str(work / "pipeline"),
            "rows": config.pipeline_rows,
            "threads": config.threads,
            "batch_size": config.batch_size,
        }
        report["pipeline"] = _subprocess([*me, "pipeline"], spec, work, "pipeline", config.lock, log)
    report["machine"]["loadavg_end"] = os.getloadavg()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stamp = created.replace(":", "").replace("-", "")
    write_json_atomic(out / f"speed-{stamp}.json", report)
    markdown = render_markdown(report)
    (out / f"speed-{stamp}.md").write_text(markdown + "\n")
    log(markdown)
    return report


# -- command line --------------------------------------------------------------------------------------------


def speed_command(
    part: Annotated[
        list[str] | None, typer.Option(help="training, embedding, pipeline (repeatable; default all).")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="synthetic, frappe (repeatable; default both).")
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="deepfm, dcnv2 (repeatable; default both).")] = None,
    library: Annotated[
        list[str] | None, typer.Option(help="featmux, plain, deepctr, rechub (default all).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where results go.")] = Path("benchmarks/results"),
    work: Annotated[Path, typer.Option(help="Exported arrays, caches, generated files.")] = Path("out/speed"),
    frappe_dir: Annotated[Path, typer.Option(help="Frappe libFM files.")] = Path("../shared/data/frappe"),
    synthetic_train_rows: Annotated[int, typer.Option(help="Synthetic training rows.")] = 600_000,
    synthetic_epochs: Annotated[int, typer.Option()] = 2,
    frappe_epochs: Annotated[int, typer.Option()] = 8,
    pipeline_rows: Annotated[int, typer.Option(help="Rows of the generated Criteo/Avazu files.")] = 1_000_000,
    threads: Annotated[int, typer.Option(help="torch threads of every contender.")] = 2,
    bf16: Annotated[bool, typer.Option(help="Also train featmux with bf16 autocast on Frappe.")] = True,
    batch_norm: Annotated[
        bool, typer.Option(help="Batch norm in every MLP (torch-rechub always has it).")
    ] = False,
    lock: Annotated[str, typer.Option(help="Measurement lock file ('' for none).")] = str(DEFAULT_LOCK),
    peers_python: Annotated[Path | None, typer.Option(help="Python of the peers' venv.")] = None,
) -> None:
    """featmux against DeepCTR-Torch, torch-rechub, plain PyTorch and TorchRec: one run, one ratio table."""
    datasets = {
        "synthetic": DatasetSetup("synthetic", 16, synthetic_epochs, "unified"),
        "frappe": DatasetSetup("frappe", 10, frappe_epochs, "collisionless"),
    }
    chosen = tuple(datasets[d] for d in (dataset or ["synthetic", "frappe"]))
    held_out = max(10_000, synthetic_train_rows // 6)
    config = SpeedConfig(
        out_dir=out,
        work_dir=work,
        parts=tuple(part or ("training", "embedding", "pipeline")),
        datasets=chosen,
        models=tuple(model or ("deepfm", "dcnv2")),
        libraries=tuple(library or ("featmux", "plain", "deepctr", "rechub")),
        frappe_dir=frappe_dir,
        synthetic_rows=(synthetic_train_rows, held_out, held_out),
        threads=threads,
        bf16=bf16,
        batch_norm=batch_norm,
        pipeline_rows=pipeline_rows,
        lock=Path(lock) if lock else None,
        **({"peers_python": peers_python} if peers_python is not None else {}),
    )
    run_speed(config, log=lambda msg: print(msg, file=sys.stderr, flush=True))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m featmux.benchmarks.speed [contender|embedding|pipeline SPEC RESULT | options]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    entries = {"contender": run_contender, "embedding": run_embedding_bench, "pipeline": run_pipeline_bench}
    if args and args[0] in entries:
        entries[args[0]](Path(args[1]), Path(args[2]))
        return
    app = typer.Typer(add_completion=False)
    app.command()(speed_command)
    app(args)


if __name__ == "__main__":
    main()
