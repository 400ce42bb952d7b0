"""Score raw feature values: `featmux.load(path).predict(frame)`.

Raw values go through the data pipeline's own steps (the readers' type conversions and row checks, then
`encode_frame`'s fingerprints), so a value scores exactly as it trained; values never seen in training
score too (hashed tables need no vocabulary, collisionless ones use their out-of-vocabulary row).

`path` is a `--checkpoint-dir` of `featmux train` (or one of its `.pt` files), scored by the eager model,
or an artefact directory of `featmux export`, scored by its exported program (or `backend="eager"`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from enum import Enum, unique
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from featmux.data.encoded import EncodedChunk, encode_frame
from featmux.data.errors import BadRows
from featmux.data.readers._convert import conform_chunks
from featmux.data.text import TextChunk
from featmux.features import CategoricalFeature, Schema, ValueEncoding
from featmux.models import CTRModel
from featmux.serving.artefact import is_artefact, read_artefact
from featmux.serving.export import BagTensors, ScoringGraph
from featmux.training.checkpoint import load_model

Frame = Any  # polars or pandas DataFrame, pyarrow Table, or a mapping of column -> list of values
ScoringFunction = Callable[[torch.Tensor, torch.Tensor, BagTensors], torch.Tensor]
INPUT = "input"  # how rows of an in-memory frame are named in errors: `input[row 3]`
CHECKPOINT_FILES = ("model.pt", "best.pt")


@unique
class Backend(Enum):
    """What computes the logits: the eager PyTorch model, or the artefact's exported program."""

    EAGER = "eager"
    PROGRAM = "program"


def feature_type(feature: CategoricalFeature) -> str:
    """The JSON type of a categorical feature's values: int, string or hex (list[...] for bags)."""
    kind = {ValueEncoding.INT: "int", ValueEncoding.STRING: "string", ValueEncoding.HEX: "hex"}[
        feature.encoding
    ]
    return f"list[{kind}]" if feature.multivalent else kind


def to_polars(data: Frame) -> pl.DataFrame:
    """A polars frame of a polars/pandas DataFrame, a pyarrow Table or a mapping of column -> values."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pa.Table | pa.RecordBatch):
        return pl.DataFrame(pl.from_arrow(data))
    if type(data).__module__.split(".")[0] == "pandas":
        return pl.from_pandas(data)
    if isinstance(data, Mapping):
        try:
            return pl.DataFrame(dict(data), strict=False)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as err:
            raise ValueError(f"cannot read the columns as a table ({err})") from err
    raise TypeError(
        f"predict takes a polars or pandas DataFrame, a pyarrow Table or a dict of lists, not "
        f"{type(data).__name__}"
    )


class Predictor:
    """A trained model that scores raw feature values (returned by `featmux.load`).

    Args:
        schema: the schema the model was trained on.
        scoring: logits of fingerprints, `scoring(ids, dense, bags) -> [B]`.
        backend: what `scoring` is.
        source: the checkpoint or artefact it was loaded from.
        max_batch: rows per forward pass when scoring a large frame.

    Example:
        >>> model = featmux.load("runs/frappe")
        >>> model.predict({"user": [12, 957], "item": [1003, 77], ...})  # probabilities, float32 [2]
    """

    def __init__(
        self,
        schema: Schema,
        scoring: ScoringFunction,
        backend: Backend,
        source: Path,
        max_batch: int = 65_536,
    ) -> None:
        self.schema = schema
        self.backend = backend
        self.source = source
        self.max_batch = max_batch
        self._scoring = scoring
        self._lock = threading.Lock()
        self.forwards = 0  # forward passes so far (micro-batching is checked by counting them)

    @property
    def features(self) -> list[dict[str, str]]:
        """The model's inputs in schema order: categorical features, then numeric ones (`float`)."""
        cats = [{"name": f.name, "type": feature_type(f)} for f in self.schema.categorical]
        return cats + [{"name": f.name, "type": "float"} for f in self.schema.numeric]

    def encode(self, data: Frame) -> EncodedChunk:
        """Fingerprints and numeric features of raw rows, exactly as training encodes them.

        Args:
            data: one row per sample with (at least) every feature column; other columns are ignored,
                the label may be absent.

        Returns:
            The encoded rows (labels 0 where the data has none).

        Raises:
            ValueError: a feature column is missing.
            DataError: a value does not convert (`input[row 3]: field 'user': not an integer`).
        """
        frame = to_polars(data)
        names = [f["name"] for f in self.features]
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ValueError(f"the data lacks feature column(s) {missing}; the model needs {names}")
        label = self.schema.label
        frame = frame.select(
            pl.col(label) if label in frame.columns else pl.lit(0, pl.Int8).alias(label), *names
        )
        rows = np.arange(frame.height, dtype=np.int64)
        typed = next(
            conform_chunks([TextChunk(frame, rows)], self.schema, INPUT, BadRows(), lines_are_rows=True)
        )
        return encode_frame(typed.frame, self.schema)

    def predict(self, data: Frame) -> np.ndarray:
        """Click probabilities of raw rows.

        Args:
            data: a polars or pandas DataFrame, a pyarrow Table, or a dict of column -> list of values.

        Returns:
            float32 [n], one probability per row, in row order.
        """
        return self.predict_encoded(self.encode(data))

    def predict_encoded(self, chunk: EncodedChunk) -> np.ndarray:
        """Click probabilities of encoded rows (`encode`), in batches of at most `max_batch` rows."""
        n = len(chunk)
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, self.max_batch):
            part = (
                chunk if n <= self.max_batch else chunk.take(np.arange(start, min(n, start + self.max_batch)))
            )
            out[start : start + len(part)] = torch.sigmoid(self.logits(part)).numpy()
        return out

    def logits(self, chunk: EncodedChunk) -> torch.Tensor:
        """Logits [n] of encoded rows, in one forward pass."""
        ids, dense = _tensor(chunk.ids), _tensor(chunk.dense)
        bags = [(_tensor(b.values), _tensor(b.offsets)) for b in chunk.bags]
        with self._lock, torch.inference_mode():  # one forward at a time: torch threads are shared
            self.forwards += 1
            return self._scoring(ids, dense, bags).float()


def _tensor(array: np.ndarray) -> torch.Tensor:
    # arrays from polars can be read-only; torch wants writable memory (copied only then)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def program_scoring(program: torch.nn.Module) -> ScoringFunction:
    """An exported program as a scoring function that also takes batches of one row.

    `torch.export` traces with B >= 2 (sizes 0 and 1 would be specialized), so its guards reject B = 1:
    a single row is scored as two copies of itself.
    """

    def score(ids: torch.Tensor, dense: torch.Tensor, bags: BagTensors) -> torch.Tensor:
        if ids.shape[0] >= 2:
            return program(ids, dense, list(bags))
        if ids.shape[0] == 0:
            return torch.zeros(0)
        twice = [(torch.cat([v, v]), torch.cat([o, o[1:] + v.numel()])) for v, o in bags]
        return program(ids.repeat(2, 1), dense.repeat(2, 1), twice)[:1]

    return score


def checkpoint_file(path: Path) -> Path:
    """The checkpoint of a run directory (model.pt, else best.pt), or `path` itself if it is a file."""
    if path.is_file():
        return path
    for name in CHECKPOINT_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"{path}: neither an artefact (artefact.json) nor a checkpoint directory "
        f"({' or '.join(CHECKPOINT_FILES)})"
    )


def eager_scoring(model: CTRModel) -> ScoringFunction:
    """The eager model's `ScoringGraph` as a scoring function (eval mode)."""
    return ScoringGraph(model.eval())


def load(path: str | Path, backend: Backend | str | None = None) -> Predictor:
    """A model that scores raw feature values.

    Args:
        path: a `--checkpoint-dir` of `featmux train` (its model.pt, else best.pt), a checkpoint file, or
            an artefact directory of `featmux export`.
        backend: "eager" or "program" (artefacts only); default: the program for artefacts.

    Returns:
        The predictor.

    Raises:
        FileNotFoundError: nothing to load at `path`.
        ArtefactError, CheckpointError: a damaged artefact or checkpoint.
    """
    path = Path(path)
    chosen = Backend(backend) if backend is not None else None
    if is_artefact(path):
        artefact = read_artefact(path)
        if chosen in (None, Backend.PROGRAM):
            return Predictor(artefact.schema, program_scoring(artefact.program()), Backend.PROGRAM, path)
        return Predictor(artefact.schema, eager_scoring(artefact.eager_model()), Backend.EAGER, path)
    if chosen is Backend.PROGRAM:
        raise ValueError(f"{path}: the program backend needs an artefact (run `featmux export` first)")
    model, schema = load_model(checkpoint_file(path))
    return Predictor(schema, eager_scoring(model), Backend.EAGER, path)
