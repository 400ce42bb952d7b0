"""A trained model as a self-contained artefact: safetensors weights, JSON rules, a `torch.export` program.

The program maps fingerprints to logits; strings are fingerprinted before it (in `featmux.data`, as in
training), salting, mixing and the table lookups run inside it:

    program(ids [B, F_u] int64, dense [B, N] float32, bags [(values [L_j] int64, offsets [B + 1] int64)])
        -> logits [B]

B and every L_j are dynamic. `--precision fp16|int8|int4` exports the tables of a table method quantized
row-wise (`featmux.embeddings.precision`, the form `featmux train --precision` serves).
An ONNX file (dynamo exporter) is written beside it when asked for; `check_onnx` compares onnxruntime's
logits with the program's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featmux.atomic import atomic_open, write_json_atomic
from featmux.embeddings import Precision, ServedEmbedding, quantize_embedding
from featmux.features import Schema
from featmux.models import CTRModel
from featmux.serving.artefact import (
    ARTEFACT_FORMAT,
    MANIFEST,
    ONNX_FILE,
    PROGRAM_FILE,
    WEIGHTS_FILE,
    describe_model,
)
from featmux.sparse import Bag, SparseFeatures

BagTensors = Sequence[tuple[torch.Tensor, torch.Tensor]]


class ScoringGraph(nn.Module):
    """A CTR model with plain tensor inputs (what `torch.export` and ONNX take): fingerprints -> logits.

    Args:
        model: the model (its tables fp32, quantized or pruned), in eval mode.

    Example:
        >>> graph = ScoringGraph(model.eval())
        >>> graph(ids, dense, [(values, offsets)]).shape  # [B]
    """

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, dense: torch.Tensor, bags: BagTensors) -> torch.Tensor:
        """Logits [B] of ids [B, F_u], dense [B, N] and one (values [L_j], offsets [B + 1]) per bag."""
        sparse = SparseFeatures(ids, tuple(Bag(values, offsets) for values, offsets in bags))
        return self.model(sparse, dense)


def example_inputs(schema: Schema, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Inputs of `ScoringGraph` for tracing: `batch` rows (>= 2, so that B is not specialized)."""
    ids = torch.arange(batch * len(schema.univalent), dtype=torch.int64).view(batch, -1)
    dense = torch.zeros(batch, len(schema.numeric))
    bags = [
        (torch.arange(2 * batch, dtype=torch.int64), torch.arange(0, 2 * batch + 1, 2, dtype=torch.int64))
        for _ in schema.multivalent
    ]
    return ids, dense, bags


def dynamic_shapes(schema: Schema) -> dict[str, Any]:
    """The dynamic dimensions: B for every input, L_j for each bag's values (offsets are B + 1)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    bags = [
        ({0: torch.export.Dim(f"values_{j}", min=0, max=1 << 30)}, {0: batch + 1})
        for j in range(len(schema.multivalent))
    ]
    return {"ids": {0: batch}, "dense": {0: batch}, "bags": bags}


def export_program(model: CTRModel, schema: Schema) -> torch.export.ExportedProgram:
    """`torch.export` of `ScoringGraph(model)` with dynamic B and bag lengths.

    Args:
        model: the (possibly quantized) model.
        schema: its schema (input layout).

    Returns:
        The exported program.
    """
    graph = ScoringGraph(model.eval())
    with torch.no_grad():
        return torch.export.export(graph, example_inputs(schema), dynamic_shapes=dynamic_shapes(schema))


def export_onnx(model: CTRModel, schema: Schema, path: Path) -> None:
    """The same graph in ONNX, with torch's dynamo exporter (opset its default)."""
    graph = ScoringGraph(model.eval())
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            example_inputs(schema),
            dynamo=True,
            dynamic_shapes=dynamic_shapes(schema),
            external_data=False,
        )
    with atomic_open(path) as f:
        f.write(program.model_proto.SerializeToString())


def onnx_failure(err: BaseException) -> str:
    """The root cause of a failed ONNX export in one line (the exporter's messages run to pages)."""
    while err.__cause__ is not None:
        err = err.__cause__
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first[:300]}"


def check_onnx(path: Path, program: torch.export.ExportedProgram, schema: Schema, rows: int = 4096) -> float:
    """Max |logit difference| between onnxruntime on `path` and `program`, on `rows` random fingerprints.

    The fingerprints span the whole int64 range (and bags of 0 to 3 values), so that the 64-bit
    wrap-around of the hashing inside the graph is exercised, not just small ids.
    """
    import onnxruntime

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(-(1 << 63), (1 << 63) - 1, (rows, len(schema.univalent)), generator=g)
    dense = torch.randn(rows, len(schema.numeric), generator=g)
    bags = []
    for _ in schema.multivalent:
        lengths = torch.randint(0, 4, (rows,), generator=g)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        values = torch.randint(-(1 << 63), (1 << 63) - 1, (int(offsets[-1]),), generator=g)
        bags.append((values, offsets))
    with torch.no_grad():
        expected = program.module()(ids, dense, bags).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = [ids.numpy(), dense.numpy(), *(t.numpy() for bag in bags for t in bag)]
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
    got = session.run(None, feeds)[0]
    return float(abs(got - expected).max())


@dataclass(frozen=True)
class ExportSummary:
    """What `export_model` wrote.

    Args:
        out: the artefact directory.
        precision: of the tables.
        files: file name -> size in bytes.
        onnx_max_abs_diff: with ONNX, the largest |logit difference| of onnxruntime against the program.
        onnx_error: why the ONNX export failed (None if it was not asked for, or worked).
    """

    out: Path
    precision: Precision
    files: dict[str, int]
    onnx_max_abs_diff: float | None = None
    onnx_error: str | None = None


def stored_precision(model: CTRModel) -> Precision:
    """The precision the model's tables are stored at (fp32 unless quantized, e.g. by `train --precision`)."""
    return Precision(model.embedding.config().get("precision", Precision.FP32.value))


def quantize_model(model: CTRModel, precision: Precision) -> CTRModel:
    """The model with its tables quantized row-wise to `precision` (a copy; the model itself for fp32).

    Raises:
        ValueError: the method has no tables to quantize (the message names it), or its tables are
            already in a serving form (trained with `--precision` or `--prune`).
    """
    if precision is Precision.FP32:
        return model
    if isinstance(model.embedding, ServedEmbedding):
        raise ValueError(
            f"--precision {precision.value}: the {model.embedding.method} tables are already stored "
            f"for serving ({model.embedding.setting}, from `featmux train`); export without --precision"
        )
    quantized = copy.deepcopy(model)
    quantized.embedding = quantize_embedding(quantized.embedding, precision)
    return quantized.eval()


def export_model(
    model: CTRModel,
    schema: Schema,
    out: str | Path,
    precision: Precision = Precision.FP32,
    onnx: bool = False,
    source: dict[str, Any] | None = None,
) -> ExportSummary:
    """Write an artefact directory: `weights.safetensors`, `artefact.json`, `program.pt2` (+ `model.onnx`).

    Args:
        model: the trained model (fp32, or its tables already quantized or pruned by `featmux train`).
        schema: its schema.
        out: the artefact directory (created; existing artefact files are replaced).
        precision: the tables' precision: FP32 (as trained), or FP16, INT8, INT4 row-wise quantized.
        onnx: also write the ONNX export.
        source: where the model came from (recorded in the manifest).

    Returns:
        The files written and their sizes.

    Raises:
        ValueError: `precision` does not apply to the model (see `quantize_model`).
    """
    scoring = quantize_model(model.eval(), precision)
    precision = stored_precision(scoring)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = describe_model(scoring, schema)  # its spec rebuilds the quantized layers
    from safetensors.torch import save  # the serving extra

    state = {k: v.detach().contiguous() for k, v in scoring.state_dict().items()}
    with atomic_open(out / WEIGHTS_FILE) as f:
        f.write(save(state))
    program = export_program(scoring, schema)
    with atomic_open(out / PROGRAM_FILE) as f:
        torch.export.save(program, f)
    files = [WEIGHTS_FILE, PROGRAM_FILE]
    (out / ONNX_FILE).unlink(missing_ok=True)
    onnx_diff, onnx_error = None, None
    if onnx:
        try:
            export_onnx(scoring, schema, out / ONNX_FILE)
        except Exception as err:  # the exporter's errors: e.g. an aten op without an ONNX function
            onnx_error = onnx_failure(err)
        else:
            files.append(ONNX_FILE)
            onnx_diff = check_onnx(out / ONNX_FILE, program, schema)
    manifest = {
        "featmux_artefact": ARTEFACT_FORMAT,
        "precision": precision.value,
        **manifest,
        "files": {"weights": WEIGHTS_FILE, "program": PROGRAM_FILE, "onnx": ONNX_FILE if onnx_diff else None},
        "onnx_check": {"rows": 4096, "max_abs_logit_diff": onnx_diff} if onnx_diff is not None else None,
        "onnx_error": onnx_error,
        "source": source or {},
    }
    write_json_atomic(out / MANIFEST, manifest)
    files.append(MANIFEST)
    sizes = {name: (out / name).stat().st_size for name in files}
    return ExportSummary(out, precision, sizes, onnx_diff, onnx_error)
