from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from featmux.benchmarks.grid import BenchmarkGrid, repo_root
from featmux.training.experiment import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "benchmarks" / "configs").glob("*.yaml"))


def test_cells_of_a_grid(grid_file):
    grid = BenchmarkGrid.from_yaml(grid_file)
    cells = grid.cells()
    # collisionless once per seed (fixed size), the budgeted methods once per budget
    assert len(cells) == 2 * (1 + 2 * 2)
    assert [c.key for c in cells[:5]] == [
        "syn/dcnv2/collisionless/1/seed0",
        "syn/dcnv2/hashing/1/seed0",
        "syn/dcnv2/hashing/1/4/seed0",
        "syn/dcnv2/unified/1/seed0",
        "syn/dcnv2/unified/1/4/seed0",
    ]
    assert len({c.filename for c in cells}) == len(cells)
    assert all("/" not in c.filename for c in cells)
    config = cells[2].experiment_config()
    assert isinstance(config, ExperimentConfig)
    assert (config.embedding, config.budget, config.seed) == ("hashing", "1/4", 0)
    assert (config.embedding_dim, config.epochs, config.batch_size) == (4, 1, 256)
    assert config.model_options == {"cross_layers": 1, "hidden": [8]}
    assert cells[0].experiment_config().budget is None  # collisionless has no budget


def test_settings_layering_and_method_variants(grid_dict, tmp_path):
    grid_dict["methods"] = {
        "hashing": {},
        "unified-t2": {"embedding": "unified", "settings": {"num_tables": 2, "epochs": 3}},
    }
    grid = BenchmarkGrid(**grid_dict)
    cells = grid.cells()
    unified = [c for c in cells if c.method == "unified-t2"]
    config = unified[0].experiment_config()
    assert (config.embedding, config.embedding_options, config.epochs) == ("unified", {"num_tables": 2}, 3)
    assert cells[0].experiment_config().epochs == 1


def test_method_options_become_embedding_options_and_only_then_enter_the_fingerprint(grid_dict):
    grid_dict["methods"] = {
        "unified": {},
        "unified-k2": {"embedding": "unified", "options": {"default_chunks": 2}},
    }
    cells = BenchmarkGrid(**grid_dict).cells()
    plain = next(c for c in cells if c.method == "unified")
    k2 = next(c for c in cells if c.method == "unified-k2" and c.budget == plain.budget)
    assert "embedding_options" not in plain.spec  # cells without options keep their old fingerprints
    assert k2.experiment_config().embedding_spec().options.default_chunks == 2
    assert plain.fingerprint != k2.fingerprint
    grid_dict["methods"] = {"hashing": {"options": {"chunks": {"a": 2}}}}
    with pytest.raises(ValueError, match=r"unknown hashing option\(s\) \['chunks'\]"):
        BenchmarkGrid(**grid_dict).cells()


def test_fingerprint_ignores_threads_but_not_settings(grid_dict):
    base = BenchmarkGrid(**grid_dict).cells()[0]
    grid_dict["settings"]["threads"] = 4
    same = BenchmarkGrid(**grid_dict).cells()[0]
    grid_dict["settings"]["epochs"] = 2
    other = BenchmarkGrid(**grid_dict).cells()[0]
    assert base.fingerprint == same.fingerprint != other.fingerprint


def test_data_paths_resolve_against_the_root(grid_dict, tmp_path):
    grid_dict["datasets"]["syn"].update(dataset="frappe", data="../shared/data/frappe", dataset_options={})
    grid_dict["settings"]["cache_dir"] = "runs/cache"
    cell = BenchmarkGrid(**grid_dict).cells()[0]
    config = cell.experiment_config(tmp_path)
    assert config.data == tmp_path / "../shared/data/frappe" and config.cache_dir == tmp_path / "runs/cache"
    assert cell.spec["data"] == "../shared/data/frappe"  # the fingerprint sees the path as written


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g.update(epochs=3), "Extra inputs are not permitted"),
        (lambda g: g["settings"].update(epoch=3), "unknown setting"),
        (lambda g: g["settings"].update(seed=3), "set by the grid"),
        (lambda g: g["datasets"]["syn"].update(typo=1), "Extra inputs are not permitted"),
        (lambda g: g["datasets"]["syn"]["settings"].update(budget="1/2"), "set by the grid"),
        (lambda g: g.update(budgets=["1/4", "0.25"]), "duplicate budgets"),
        (lambda g: g.update(budgets=["1/0"]), "cannot read budget"),
        (lambda g: g.update(methods=["unified", "unified-k2"]), "say which it uses"),
        (lambda g: g["datasets"]["syn"].update(methods=["nope"]), "unknown method"),
        (lambda g: g["datasets"]["syn"]["models"].update(dcnv3={}), "unknown model"),
        (lambda g: g["datasets"]["syn"]["models"]["dcnv2"].update(layers=2), "unknown DCNv2Config option"),
        (lambda g: g["settings"].update(learning_rate=0), "greater than 0"),
        (lambda g: g.update(seeds=[0, 0]), "duplicate seeds"),
        (lambda g: g["settings"].update(checkpoint_dir="runs/x"), "set per cell"),
        (lambda g: g.update(budget_seeds={"1/16": [0]}), "not a budget of the grid"),
        (lambda g: g.update(budget_seeds={"1/4": [1, 1]}), "distinct seeds"),
    ],
)
def test_invalid_grids_are_rejected(grid_dict, edit, message):
    edit(grid_dict)
    with pytest.raises((ValidationError, ValueError), match=message):
        BenchmarkGrid(**grid_dict).cells()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    grid = BenchmarkGrid.from_yaml(path)
    cells = grid.cells()
    assert cells and repo_root(path) == REPO
    for cell in cells:
        data = cell.spec.get("data")
        assert data is None or data.startswith("../shared/data/")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_data_exists(path, shared_data):
    for cell in BenchmarkGrid.from_yaml(path).cells():
        config = cell.experiment_config(REPO)
        assert config.data is None or config.data.exists(), config.data


def test_budget_seeds_give_some_budgets_their_own_seeds(grid_dict):
    before = {c.key: c.fingerprint for c in BenchmarkGrid(**grid_dict).cells()}
    grid_dict["seeds"] = [0, 1, 2]
    grid_dict["budget_seeds"] = {"0.25": [0]}  # the grid's 1/4, written as a decimal
    cells = BenchmarkGrid(**grid_dict).cells()
    seeds: dict[tuple[str, str], list[int]] = {}
    for c in cells:
        seeds.setdefault((c.method, c.budget), []).append(c.seed)
    assert seeds == {
        ("collisionless", "1"): [0, 1, 2],  # budget "1"'s seeds: the grid's
        ("hashing", "1"): [0, 1, 2],
        ("unified", "1"): [0, 1, 2],
        ("hashing", "1/4"): [0],
        ("unified", "1/4"): [0],
    }
    assert all(before[c.key] == c.fingerprint for c in cells if c.key in before)  # cells keep their keys
    assert [c.key for c in cells[:5]] == list(before)[:5]
    grid_dict["budget_seeds"] = {"1": [5]}
    cells = BenchmarkGrid(**grid_dict).cells()
    assert {c.seed for c in cells if c.budget == "1"} == {5}
    assert [c.seed for c in cells if c.method == "collisionless"] == [5]


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(["a", "b"]))
    with pytest.raises(ValueError, match="expected a mapping"):
        BenchmarkGrid.from_yaml(path)


def test_split_seeds_are_a_grid_axis(grid_dict, tmp_path):
    table = tmp_path / "clicks.csv"
    table.write_text("label,user\n" + "".join(f"{i % 2},{i % 7}\n" for i in range(50)))
    grid_dict["datasets"] = {
        "csv": {
            "dataset": "csv",
            "data": str(table),
            "dataset_options": {"label": "label", "categorical": ["user"]},
            "models": {"lr": {}},
        }
    }
    plain = BenchmarkGrid(**grid_dict).cells()
    assert "split_seed" not in plain[0].spec and plain[0].key == "csv/lr/collisionless/1/seed0"
    grid_dict["split_seeds"] = [0, 5]
    cells = BenchmarkGrid(**grid_dict).cells()
    assert len(cells) == 2 * len(plain)
    assert [c.key for c in cells[:2]] == [
        "csv/lr/collisionless/1/seed0/split0",
        "csv/lr/hashing/1/seed0/split0",
    ]
    assert cells[0].filename == "csv__lr__collisionless__1__seed0__split0.json"
    five = next(c for c in cells if c.split_seed == 5)
    config = five.experiment_config()
    assert config.split_seed == 5 and config.source_options()["seed"] == 5
    assert five.labels()["split_seed"] == 5
    # a grid without split seeds keeps its cells' fingerprints (committed results stay current)
    assert plain[0].fingerprint != cells[0].fingerprint
    grid_dict.pop("split_seeds")
    assert BenchmarkGrid(**grid_dict).cells()[0].fingerprint == plain[0].fingerprint
