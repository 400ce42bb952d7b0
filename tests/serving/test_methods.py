"""Every registered embedding method (and the served forms of training: --precision, --prune) exports,
loads and scores like its eager model; a precision the method cannot take is refused naming it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import featmux as fm
from featmux.cli.main import app
from featmux.embeddings import method_names
from featmux.embeddings.precision import Precision
from featmux.serving import export_model, read_artefact
from featmux.training.checkpoint import load_model

TABLE_METHODS = ("collisionless", "hashing", "unified", "adaptive", "zch")
CASES = [(name, {}) for name in method_names()] + [
    ("hashing", {"precision": "int8"}),  # trained, then served int8
    ("adaptive", {"precision": "int4", "qat": True}),
    ("unified", {"prune": 0.5}),
    ("hashing", {"prune": 0.5, "prune_method": "pep", "pep_init": -6.0}),  # learned zeros, then the cut
    ("unified", {"embedding_options": {"qat_bits": 8}}),  # trained for int8, served int8
    ("mde", {"embedding_options": {"layout": "unified"}}),
    ("cce", {"embedding_options": {"recluster_every": 1, "reclusters": 2}}),  # re-clustered pointers
]


@pytest.mark.parametrize(("method", "extra"), CASES, ids=lambda c: c if isinstance(c, str) else "-".join(c))
def test_every_method_exports_and_scores_as_its_eager_model(method, extra, train_lr, tmp_path, rows):
    run = train_lr(method, tmp_path, **extra)
    expected = fm.load(run).predict(rows)  # the eager model of the checkpoint
    model, schema = load_model(run / "model.pt")
    export_model(model, schema, tmp_path / "artefact")
    artefact = read_artefact(tmp_path / "artefact")
    assert artefact.manifest["spec"]["embedding"]["method"] == method
    qat_bits = extra.get("embedding_options", {}).get("qat_bits")
    assert artefact.precision == extra.get("precision", f"int{qat_bits}" if qat_bits else "fp32")
    # table methods describe their row rules in the manifest (the others' hashing is in the program)
    assert bool(artefact.manifest["tables"]) == (method in TABLE_METHODS)
    for backend in ("program", "eager"):
        scores = fm.load(tmp_path / "artefact", backend).predict(rows)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6, err_msg=backend)


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.INT4])
def test_export_quantizes_a_table_method(precision, run_dir, tmp_path, rows):
    model, schema = load_model(run_dir / "model.pt")
    summary = export_model(model, schema, tmp_path, precision)
    assert summary.precision is precision and read_artefact(tmp_path).precision == precision.value
    program = fm.load(tmp_path).predict(rows)
    np.testing.assert_allclose(fm.load(tmp_path, "eager").predict(rows), program, rtol=0, atol=1e-6)
    fp32 = fm.load(run_dir).predict(rows)
    assert 0 < np.abs(program - fp32).max() <= {Precision.FP16: 1e-4, Precision.INT4: 1e-2}[precision]


def test_export_refuses_a_precision_the_model_cannot_take(train_lr, tmp_path):
    run = train_lr("dhe", tmp_path / "dhe")
    model, schema = load_model(run / "model.pt")
    with pytest.raises(ValueError, match=r"--precision applies to table methods.*dhe"):
        export_model(model, schema, tmp_path / "a", Precision.INT8)
    args = ["export", str(run), "--out", str(tmp_path / "a"), "--precision", "int8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.output.startswith("error: --precision applies to table methods")
    assert "dhe" in result.output and "Traceback" not in result.output
    model, schema = load_model(train_lr("hashing", tmp_path / "h", prune=0.5) / "model.pt")
    with pytest.raises(ValueError, match=r"--precision int8: the hashing tables are already stored"):
        export_model(model, schema, tmp_path / "b", Precision.INT8)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("method", "extra"), [("tt", {}), ("hashing", {"precision": "int8"})], ids=["tt", "int8"]
)
def test_score_and_serve_a_compression_method(method, extra, train_lr, tmp_path, rows, instances):
    from fastapi.testclient import TestClient

    from featmux.serving.server import create_app

    run = train_lr(method, tmp_path, **extra)
    expected = fm.load(run).predict(rows)
    args = ["export", str(run), "--out", str(tmp_path / "artefact")]
    assert CliRunner().invoke(app, args).exit_code == 0
    rows.drop("click").write_csv(tmp_path / "rows.csv")
    args = ["score", str(tmp_path / "artefact"), str(tmp_path / "rows.csv"), "--out", str(tmp_path / "s.csv")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = pl.read_csv(tmp_path / "s.csv")["score"].to_numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    with TestClient(create_app(fm.load(tmp_path / "artefact"))) as client:
        response = client.post("/predict", json={"instances": instances(rows)})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=0, atol=1e-6)
