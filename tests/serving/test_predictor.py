"""fm.load + predict: eager model, artefact (eager and exported program) and every input type agree."""

from __future__ import annotations

import numpy as np
import pandas  # noqa: F401  (pandas frames are an input type)
import pyarrow as pa
import pytest
import torch

import featmux as fm
from featmux.data.errors import DataError
from featmux.embeddings.precision import Precision, QuantizedTable
from featmux.serving import Backend, read_artefact
from featmux.serving.export import quantize_model
from featmux.training.checkpoint import load_model

INT8_TOLERANCE = 2e-3  # |probability difference| of int8 tables against fp32, on these rows


def test_program_and_eager_artefact_match_the_trained_model(run_dir, artefacts, rows):
    eager = fm.load(run_dir)
    assert eager.backend is Backend.EAGER
    expected = eager.predict(rows)
    program = fm.load(artefacts["fp32"])
    assert program.backend is Backend.PROGRAM
    np.testing.assert_allclose(program.predict(rows), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fm.load(artefacts["fp32"], "eager").predict(rows), expected, rtol=0, atol=1e-6)
    # the checkpoint file itself loads too, and one row at a time scores the same
    single = fm.load(run_dir / "model.pt")
    np.testing.assert_allclose(single.predict(rows.head(1)), expected[:1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(program.predict(rows.slice(3, 1)), expected[3:4], rtol=0, atol=1e-6)


def test_every_input_type_scores_the_same(artefacts, rows):
    model = fm.load(artefacts["fp32"])
    expected = model.predict(rows)
    for data in (rows.to_pandas(), rows.to_arrow(), rows.to_dict(as_series=False), rows.drop("click")):
        np.testing.assert_array_equal(model.predict(data), expected)
    assert isinstance(rows.to_arrow(), pa.Table)


def test_unseen_values_score(artefacts, rows):
    model = fm.load(artefacts["fp32"])
    unseen = rows.with_columns(
        user=rows["user"] + 1_000_000,
        site=rows["site"] + "-new",
        device=rows["device"].str.replace("^", "ff"),
    )
    scores = model.predict(unseen)
    assert scores.shape == (rows.height,) and np.isfinite(scores).all()
    assert ((scores > 0) & (scores < 1)).all()
    assert not np.allclose(scores, model.predict(rows))  # new ids land on other rows


def test_missing_values_score_as_in_training(artefacts, rows):
    model = fm.load(artefacts["fp32"])
    blank = rows.with_columns(site=rows["site"].set(rows["site"] != "", None))  # every site missing
    empty = rows.with_columns(site=rows["site"].str.replace(".*", ""))  # empty string = missing
    np.testing.assert_array_equal(model.predict(blank), model.predict(empty))


def test_bad_values_name_row_and_field(artefacts, rows):
    model = fm.load(artefacts["fp32"])
    data = rows.to_dict(as_series=False)
    data["user"] = [str(u) for u in data["user"]]
    data["user"][3] = "abc"
    with pytest.raises(DataError, match=r"input\[row 3\]: field 'user': not an integer"):
        model.predict(data)
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['price'\]"):
        model.predict(rows.drop("price"))


def test_int8_tables_are_row_wise_and_close(run_dir, artefacts, rows):
    model, _ = load_model(run_dir / "model.pt")
    quantized = quantize_model(model, Precision.INT8)
    layers = [m for m in quantized.modules() if isinstance(m, QuantizedTable)]
    assert layers and all(m.codes.dtype == torch.uint8 for m in layers)
    assert hasattr(model.embedding.shared, "weight")  # the trained model is left as it was
    # an int8 model still reports its tables: no trainable rows, fewer stored bytes (D + 4 a row, not 4 D)
    assert quantized.embedding.table_parameters() == [] and quantized.embedding.num_parameters() == 0
    table_rows = sum(t.num_rows for t in quantized.embedding.table_modules())
    saved = model.embedding.memory_bytes() - quantized.embedding.memory_bytes()
    assert saved == table_rows * (4 * 4 - (4 + 4))  # D = 4
    # each value within a quantization step of its row (the float16 scale and bias round a little)
    table = model.embedding.shared.weight.detach()
    restored = quantized.embedding.inner.shared.served.read(torch.arange(table.shape[0]))
    span = (table.max(1).values - table.min(1).values)[:, None]
    assert ((restored - table).abs() <= span / 255 + 1e-3 * table.abs().max()).all()
    fp32 = fm.load(artefacts["fp32"]).predict(rows)
    int8 = fm.load(artefacts["int8"]).predict(rows)
    assert np.abs(int8 - fp32).max() <= INT8_TOLERANCE
    np.testing.assert_allclose(fm.load(artefacts["int8"], "eager").predict(rows), int8, rtol=0, atol=1e-6)
    assert read_artefact(artefacts["int8"]).precision == "int8"


def test_manifest_describes_inputs_salts_and_rules(artefacts):
    manifest = read_artefact(artefacts["fp32"]).manifest
    assert manifest["inputs"] == {"ids": ["user", "site", "device"], "dense": ["price"], "bags": ["tags"]}
    assert manifest["fingerprint"]["features"] == {
        "user": "int",
        "site": "string",
        "device": "hex",
        "tags": "int",
    }
    slots = manifest["tables"]["shared"]["slots"]
    assert {s["feature"] for s in slots} == {"user", "site", "device", "tags"}
    assert all(isinstance(s["salt"], int) and s["rows"] > 0 for s in slots)
    assert {"weights": "weights.safetensors", "program": "program.pt2"}.items() <= manifest["files"].items()
