"""One experiment end to end: the data split's own seed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from featmux.training.experiment import ExperimentConfig


def test_split_seed_goes_to_the_source_and_the_result(tmp_path, monkeypatch):
    from featmux.training.experiment import run_experiment

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "clicks.csv"
    table.write_text("label,user\n" + "".join(f"{i % 2},{i % 7}\n" for i in range(300)))
    base = {"dataset": "csv", "data": table, "model": "lr", "epochs": 1, "progress": False}
    options = {"dataset_options": {"label": "label", "categorical": ["user"]}}
    default = run_experiment(ExperimentConfig(**base, **options))
    other = run_experiment(ExperimentConfig(**base, **options, split_seed=4))
    assert (default["split_seed"], other["split_seed"]) == (0, 4)
    assert default["rows"] != other["rows"]  # another carving of the same file
    with pytest.raises(ValidationError, match="disagree"):
        ExperimentConfig(**base, dataset_options={**options["dataset_options"], "seed": 1}, split_seed=2)
    with pytest.raises(ValidationError, match="synthetic"):
        ExperimentConfig(split_seed=1)


def test_options_flags_update_the_files_options_key_by_key(tmp_path):
    """`--dataset-option behaviour=liked` on a preset keeps its other source options; a flag that
    changes the model (or dataset, or embedding) takes the flags' options alone."""
    path = tmp_path / "run.yaml"
    path.write_text(
        "dataset: movielens\ndataset_options: {ratings: r.dat, history: 50}\nmodel: deepfm\n"
        "model_options: {hidden: [8], dropout: 0.1}\n"
    )
    config = ExperimentConfig.from_yaml(
        path, dataset_options={"behaviour": "liked"}, model_options={"dropout": 0.2}
    )
    assert config.dataset_options == {"ratings": "r.dat", "history": 50, "behaviour": "liked"}
    assert config.model_options == {"hidden": [8], "dropout": 0.2}
    other = ExperimentConfig.from_yaml(path, model="dcnv2", model_options={"hidden": [4]})
    assert other.model_options == {"hidden": [4]}
