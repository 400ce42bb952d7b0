"""Train DeepFM or DCN-v2 with a peer library (DeepCTR-Torch or torch-rechub) through its own training API.

Run by `featmux bench speed` with the peers' interpreter (`benchmarks/speed/install_peers.sh` makes it);
it never imports featmux. One process trains one (library, model, dataset) and writes one JSON result:

    .venv-peers/bin/python benchmarks/speed/peers.py SPEC.json RESULT.json

SPEC holds: library ("deepctr" | "rechub"), model ("deepfm" | "dcnv2"), data (a directory with
{train,valid,test}.npz holding `ids` int64 [n, F] (per-field indices in [0, V_f)) and `labels` float32
[n], and meta.json with `vocab_sizes`), embedding_dim, hidden, cross_layers, batch_size, learning_rate,
epochs, threads, seed, init_std, batch_norm (DeepCTR-Torch `dnn_use_bn`; torch-rechub always has it),
bf16 (optional: train under bf16 autocast).

Each epoch is one call of the library's own training code (DeepCTR-Torch `model.fit(epochs=1)`,
torch-rechub `CTRTrainer.train_one_epoch`), timed alone; validation and test AUC are computed after it
and not timed. Settings that would differ from featmux's are aligned where the library exposes them:
no L2 terms, Adam lr as given, embeddings initialised N(0, init_std^2). What cannot be changed is
recorded in `notes` (DeepCTR-Torch sums the loss over the batch, torch-rechub's MLP has batch norm).

bf16: both libraries train in the calling thread (DeepCTR-Torch's `fit` and torch-rechub's loaders use
a DataLoader without workers), and autocast is a thread-local context, so wrapping each epoch's call in
`torch.autocast("cpu", torch.bfloat16)` puts their forward passes under it, as a user would. Forward
hooks on every nn.Linear check that it held: the result's `autocast_check` counts the Linear outputs by
dtype and the calls made off the calling thread. Evaluation runs in float32, as featmux's does.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score


def _no_network() -> None:
    """DeepCTR-Torch checks PyPI for a newer version on import; this machine has no network for that."""
    try:
        import requests
    except ImportError:
        return

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise requests.ConnectionError("no network in benchmarks")

    requests.get = refuse  # type: ignore[assignment]


def _load(data: Path, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    with np.load(data / f"{split}.npz") as z:
        ids, labels = z["ids"], z["labels"].astype(np.float32)
    return {f"f{i}": np.ascontiguousarray(ids[:, i]) for i in range(ids.shape[1])}, labels


def _metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    probs = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    return {"auc": float(roc_auc_score(labels, probs)), "logloss": float(log_loss(labels, probs))}


def _deepctr(spec: dict[str, Any], vocab: list[int], splits: dict[str, Any]) -> dict[str, Any]:
    _no_network()
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DCN, DeepFM

    cols = [
        SparseFeat(f"f{i}", vocabulary_size=v, embedding_dim=spec["embedding_dim"])
        for i, v in enumerate(vocab)
    ]
    common = {
        "dnn_hidden_units": tuple(spec["hidden"]),
        "l2_reg_linear": 0.0,
        "l2_reg_embedding": 0.0,
        "l2_reg_dnn": 0.0,
        "init_std": spec["init_std"],
        "seed": spec["seed"],
        "dnn_dropout": 0.0,
        "dnn_use_bn": bool(spec.get("batch_norm", False)),
        "task": "binary",
        "device": "cpu",
    }
    if spec["model"] == "deepfm":
        model = DeepFM(cols, cols, **common)
    else:
        model = DCN(
            cols,
            cols,
            cross_num=spec["cross_layers"],
            cross_parameterization="matrix",
            l2_reg_cross=0.0,
            **common,
        )
    model.compile(
        torch.optim.Adam(model.parameters(), lr=spec["learning_rate"]), "binary_crossentropy", metrics=[]
    )
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (
        splits["train"],
        splits["valid"],
        splits["test"],
    )

    def train_epoch() -> None:
        model.fit(x_train, y_train, batch_size=spec["batch_size"], epochs=1, verbose=0, shuffle=True)

    def predict(x: dict[str, np.ndarray]) -> np.ndarray:
        return model.predict(x, batch_size=16384)

    notes = [
        "DeepCTR-Torch fit(): loss reduction='sum', ids go through float32 (exact below 2^24)",
        "linear (first-order) part as its own 1-wide tables",
    ]
    return _loop(spec, model, train_epoch, predict, (x_valid, y_valid), (x_test, y_test), notes)


def _rechub(spec: dict[str, Any], vocab: list[int], splits: dict[str, Any]) -> dict[str, Any]:
    from torch_rechub.basic.features import SparseFeature
    from torch_rechub.basic.initializers import RandomNormal
    from torch_rechub.models.ranking import DCNv2, DeepFM
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator

    init = RandomNormal(0.0, spec["init_std"])
    feats = [
        SparseFeature(f"f{i}", vocab_size=v, embed_dim=spec["embedding_dim"], initializer=init)
        for i, v in enumerate(vocab)
    ]
    mlp = {"dims": list(spec["hidden"]), "dropout": 0.0, "activation": "relu"}
    if spec["model"] == "deepfm":
        model = DeepFM(deep_features=feats, fm_features=feats, mlp_params=mlp)
    else:
        model = DCNv2(
            features=feats,
            n_cross_layers=spec["cross_layers"],
            mlp_params=mlp,
            model_structure="parallel",
            use_low_rank_mixture=False,
        )
    out = tempfile.mkdtemp(prefix="rechub-")
    trainer = CTRTrainer(
        model,
        optimizer_params={"lr": spec["learning_rate"], "weight_decay": 0.0},
        n_epoch=1,
        device="cpu",
        model_path=out,
    )
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (
        splits["train"],
        splits["valid"],
        splits["test"],
    )
    loaders = DataGenerator(x_train, y_train).generate_dataloader(
        x_val=x_valid, y_val=y_valid, x_test=x_test, y_test=y_test, batch_size=spec["batch_size"]
    )
    train_loader = loaders[0]

    def train_epoch() -> None:
        trainer.train_one_epoch(train_loader, log_interval=10**9)

    def predict(x: dict[str, np.ndarray]) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = [
                model({k: torch.from_numpy(v[i : i + 16384]) for k, v in x.items()})
                for i in range(0, len(next(iter(x.values()))), 16384)
            ]
        return torch.cat(out).numpy()

    notes = [
        "torch-rechub MLP always has BatchNorm1d",
        "per-sample dict Dataset + default collate (its DataGenerator)",
    ]
    return _loop(spec, model, train_epoch, predict, (x_valid, y_valid), (x_test, y_test), notes)


class _AutocastCheck:
    """Counts the training-time nn.Linear outputs of a model by dtype, and those off the calling thread."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.thread = threading.get_ident()
        self.counts: dict[str, int] = {}
        self.other_threads = 0
        self.active = False
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(self._seen)

    def _seen(self, _module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if not self.active:  # evaluation calls are not counted
            return
        key = str(output.dtype).removeprefix("torch.")
        self.counts[key] = self.counts.get(key, 0) + 1
        self.other_threads += threading.get_ident() != self.thread

    def as_dict(self) -> dict[str, Any]:
        """`{"linear_outputs": {"bfloat16": n, ...}, "other_threads": k}`."""
        return {"linear_outputs": dict(self.counts), "other_threads": self.other_threads}


def _loop(
    spec: dict[str, Any],
    model: torch.nn.Module,
    train_epoch: Callable[[], None],
    predict: Callable[[dict[str, np.ndarray]], np.ndarray],
    valid: tuple[dict[str, np.ndarray], np.ndarray],
    test: tuple[dict[str, np.ndarray], np.ndarray],
    notes: list[str],
) -> dict[str, Any]:
    """Train `spec["epochs"]` epochs, timing only `train_epoch`; evaluate valid and test after each.

    With `spec["bf16"]` each `train_epoch` call runs under bf16 autocast; evaluation stays float32.
    """
    history = []
    train_seconds = 0.0
    bf16 = bool(spec.get("bf16", False))
    check = _AutocastCheck(model)
    for epoch in range(spec["epochs"]):
        start = time.perf_counter()
        check.active = True
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            train_epoch()
        check.active = False
        train_seconds += time.perf_counter() - start
        v = _metrics(valid[1], predict(valid[0]))
        t = _metrics(test[1], predict(test[0]))
        history.append(
            {
                "epoch": epoch + 1,
                "train_seconds": train_seconds,
                "valid_auc": v["auc"],
                "valid_logloss": v["logloss"],
                "test_auc": t["auc"],
                "test_logloss": t["logloss"],
            }
        )
        print(
            f"[{spec['library']} {spec['model']}] epoch {epoch + 1}: {train_seconds:.1f}s "
            f"valid AUC {v['auc']:.5f}",
            file=sys.stderr,
            flush=True,
        )
    params = sum(p.numel() for p in model.parameters())
    if bf16:
        notes = [*notes, "torch.autocast('cpu', torch.bfloat16) around each epoch's call; evaluation float32"]
    return {"history": history, "parameters": params, "notes": notes, "autocast_check": check.as_dict()}


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    np.random.seed(spec["seed"])
    data = Path(spec["data"])
    vocab = json.loads((data / "meta.json").read_text())["vocab_sizes"]
    splits = {s: _load(data, s) for s in ("train", "valid", "test")}
    load = os.getloadavg()
    run = _deepctr if spec["library"] == "deepctr" else _rechub
    result = run(spec, vocab, splits)
    versions = {"torch": torch.__version__}
    for name in ("deepctr_torch", "torch_rechub"):
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    result.update(
        {
            "rows": {s: int(v[1].shape[0]) for s, v in splits.items()},
            "threads": torch.get_num_threads(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "loadavg_start": load,
            "loadavg_end": os.getloadavg(),
            "versions": versions,
        }
    )
    Path(result_path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
