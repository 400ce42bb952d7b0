"""Tuned presets: found by dataset and model, announced, overridden by flags, and every one valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featmux.cli import preset
from featmux.cli.main import app
from featmux.training.experiment import ExperimentConfig

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_find_preset_by_dataset_and_model_in_any_spelling():
    assert preset.find_preset("frappe", "FinalMLP") == CONFIGS / "frappe_finalmlp.yaml"
    assert preset.find_preset("frappe", "dcn-v2") == CONFIGS / "frappe_dcnv2.yaml"
    assert preset.find_preset("frappe", "nosuchmodel") is None
    assert preset.find_preset("synthetic", "dcnv2") is None


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_is_a_valid_config_of_the_model_it_is_named_after(path):
    config = ExperimentConfig.from_yaml(path)  # unknown keys or model options fail here
    dataset, model = path.stem.split("_", 1)
    assert config.model == model and config.dataset.startswith(dataset[:5])


@pytest.mark.parametrize(
    "model", ["deepfm", "dcn", "xdeepfm", "autoint", "finalmlp", "finalnet", "dcnv2", "dlrm"]
)
def test_frappe_presets_follow_the_bars_protocol(model):
    config = ExperimentConfig.from_yaml(CONFIGS / f"frappe_{model}.yaml")
    assert (config.embedding_dim, config.batch_size, config.learning_rate) == (10, 4096, 1e-3)
    assert config.embedding == "collisionless" and config.patience == 2 and config.embedding_l2 > 0


def test_train_without_config_starts_from_the_preset_and_flags_override_it(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "synthetic_deepfm.yaml").write_text(
        "dataset: synthetic\nmodel: deepfm\nmodel_options: {hidden: [8], dropout: 0.1}\n"
        "embedding: hashing\nembedding_dim: 4\nbatch_size: 64\nlearning_rate: 0.002\nepochs: 1\n"
    )
    monkeypatch.setattr(preset, "PRESETS", folder)
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    args = ["train", "--model", "deepfm", "--dataset-option", "rows=1000", "--batch-size", "256"]
    args += ["--threads", "1", "--no-progress", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = "".join(result.output.split())  # rich wraps long paths
    assert "startingfromthetunedpreset" in said and "configs/synthetic_deepfm.yaml" in said
    config = json.loads(out.read_text())["config"]
    assert config["model_options"] == {"hidden": [8], "dropout": 0.1}  # from the preset
    assert config["embedding"] == "hashing" and config["learning_rate"] == 0.002
    assert config["batch_size"] == 256  # the flag wins

    skipped = runner.invoke(app, [*args[:-2], "--no-preset", "--max-steps", "1", "--out", str(out)])
    assert skipped.exit_code == 0, skipped.output
    assert "preset" not in skipped.output
    assert json.loads(out.read_text())["config"]["embedding"] == "unified"  # the plain default


def test_the_din_preset_reads_history_movies_on_item_rows_and_splits_as_the_deepfm_baseline():
    din = ExperimentConfig.from_yaml(CONFIGS / "movielens1m_din.yaml")
    deepfm = ExperimentConfig.from_yaml(CONFIGS / "movielens1m_deepfm.yaml")
    assert din.dataset_options["history"] == 50 and din.dataset_options["share_embedding"] is True
    assert din.effective_split_seed() == deepfm.effective_split_seed()
    assert din.dataset_options["ratings"] == deepfm.dataset_options["ratings"]
