from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from featmux.analysis.cli import analyze_app
from featmux.embeddings import UnifiedEmbedding, UnifiedEmbeddingConfig
from featmux.features import CategoricalFeature, Schema, ValueEncoding
from featmux.models import build_model
from featmux.training.checkpoint import save_model

runner = CliRunner()
SYNTHETIC = [
    "--dataset",
    "synthetic",
    "--dataset-option",
    "rows=3000",
    "--dataset-option",
    "cardinalities=[5,50,500]",
]


def test_plan_from_a_cardinality_file(tmp_path):
    cards = tmp_path / "cards.yaml"
    cards.write_text(yaml.safe_dump({"user": 100_000, "item": 20_000, "device": 5}, sort_keys=False))
    out = tmp_path / "plan.json"
    args = ["plan", "--memory", "2MB", "--embedding-dim", "8", "--cardinalities", str(cards)]
    done = runner.invoke(analyze_app, [*args, "--private-max-cardinality", "10", "--out", str(out)])
    assert done.exit_code == 0, done.output
    plan = json.loads(out.read_text())
    assert plan["memory_bytes"] <= 2_000_000 and plan["experiment_options"]["private_max_cardinality"] == 10
    assert "budget: params:" in done.output and [f["feature"] for f in plan["features"]] == [
        "user",
        "item",
        "device",
    ]


def test_plan_from_a_dataset_reports_traffic(tmp_path):
    args = ["plan", "--memory", "20kB", "--embedding-dim", "4", *SYNTHETIC, "--cache-dir", str(tmp_path)]
    done = runner.invoke(analyze_app, [*args, "--out", str(tmp_path / "plan.json")])
    assert done.exit_code == 0, done.output
    features = json.loads((tmp_path / "plan.json").read_text())["features"]
    assert [f["feature"] for f in features] == ["C1", "C2", "C3"]
    assert all(f["foreign_share"] is not None for f in features)


def test_plan_needs_cardinalities():
    done = runner.invoke(analyze_app, ["plan", "--memory", "1MB", "--embedding-dim", "4"])
    assert done.exit_code == 2 and "--cardinalities" in done.output


def test_collisions_on_a_dataset(tmp_path):
    out = tmp_path / "collisions.csv"
    args = ["collisions", *SYNTHETIC, "--budget", "1/8", "--embedding-dim", "4", "--cache-dir", str(tmp_path)]
    done = runner.invoke(analyze_app, [*args, "--embedding", "unified", "--slots", "--out", str(out)])
    assert done.exit_code == 0, done.output
    rows = out.read_text().splitlines()
    assert rows[0].startswith("feature,table,chunks,values,traffic,values_any") and len(rows) == 4
    hashing = runner.invoke(analyze_app, [*args, "--embedding", "hashing"])
    assert hashing.exit_code == 0, hashing.output


def test_collisions_rejects_bad_config(tmp_path):
    done = runner.invoke(analyze_app, ["collisions", *SYNTHETIC, "--budget", "1/0"])
    assert done.exit_code == 2 and "invalid configuration" in done.output


def test_orthogonality_of_a_checkpoint(tmp_path):
    features = tuple(CategoricalFeature(n, ValueEncoding.INT) for n in ("a", "b", "c"))
    emb = UnifiedEmbedding(features, UnifiedEmbeddingConfig(rows=40, embedding_dim=3))
    model = build_model("dcnv2", emb, 0, {"cross_layers": 1, "hidden": [12]})
    save_model(tmp_path / "model.pt", model, Schema("label", features, ()))
    out = tmp_path / "pairs.json"
    done = runner.invoke(analyze_app, ["orthogonality", str(tmp_path / "model.pt"), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "mean cos^2 of principal angles" in done.output and len(json.loads(out.read_text())) == 3
    missing = runner.invoke(analyze_app, ["orthogonality", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2
