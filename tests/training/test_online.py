"""Online training: progressive validation, stream sources, frozen vocabularies, resume, validation."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
import yaml
from helpers import interrupted

from featmux.data.cache import chunk_to_batch
from featmux.data.errors import BadRows, DataError
from featmux.data.synthetic import SyntheticConfig
from featmux.embeddings import Vocabulary, build_embedding, quantize_embedding
from featmux.models import build_model
from featmux.training.checkpoint import CheckpointError, load_model
from featmux.training.online import (
    OnlineBenchmark,
    OnlineConfig,
    iter_partitions,
    load_online_results,
    plot_progressive,
    progressive_table,
    run_online,
    run_online_benchmark,
    seed_summary,
    write_avazu_stream,
)
from featmux.training.online.loop import _encode, _progressive
from featmux.training.serving_form import ServingForm

SYNTHETIC = {
    "cardinalities": [5, 20, 100, 300],
    "first_order_std": 1.5,
    "interaction_std": 0.5,
    "churn_rows": 4_000,  # every value gets a new id once in 8 partitions
    "churn_period": 8,
    "seed": 3,
}
BASE = {
    "dataset": "synthetic",
    "dataset_options": SYNTHETIC,
    "partition_rows": 4_000,
    "partitions": 4,
    "model": "dcnv2",
    "model_options": {"cross_layers": 1, "hidden": [16]},
    "embedding_dim": 8,
    "batch_size": 512,
    "learning_rate": 1e-2,
    "threads": 1,
}
AVAZU_CARDINALITIES = (3, 4, 50, 60, 5, 70, 20, 6, 300, 500, 40, 3, 3, 30, 4, 4, 20, 3, 10, 12, 8)


def config(**changes) -> OnlineConfig:
    return OnlineConfig(**{**BASE, **changes})


def avazu(data, **changes) -> OnlineConfig:
    """An Avazu stream from files: partitions come from the files (or the cut of one file)."""
    stream = {
        "dataset": "avazu",
        "data": data,
        "dataset_options": {},
        "partitions": None,
        "partition_rows": None,
    }
    return OnlineConfig(**{**BASE, **stream, **changes})


def untrained_model(cfg: OnlineConfig):
    """The model that scores partition 0, built as `run_online` builds it, and that partition's rows."""
    schema, parts = iter_partitions(cfg, BadRows())
    chunk = _encode(next(parts).load(), schema)
    vocabulary = Vocabulary(schema.feature_names)
    for i, f in enumerate(schema.univalent):
        vocabulary.update(f.name, chunk.ids[:, i])
    torch.manual_seed(cfg.seed)
    embedding = build_embedding(schema.categorical, cfg.embedding_spec(), vocabulary)
    return build_model(cfg.model, embedding, 0, cfg.model_options), chunk


def test_progressive_validation_scores_each_partition_before_training_on_it():
    cfg = config(embedding="unified", budget="1/2")
    result = run_online(cfg)
    assert [p.rows for p in result.partitions] == [4_000] * 4
    assert [p.name for p in result.partitions][:2] == ["rows 0-3999", "rows 4000-7999"]
    assert result.partitions[-1].steps == 4 * 8  # one pass of 8 batches per partition
    # partition 0 is scored by the untrained model: rebuild it the same way and compare
    untrained, chunk = untrained_model(cfg)
    assert _progressive(untrained, chunk, 4096)[0].auc == pytest.approx(result.partitions[0].auc, abs=1e-12)
    # later partitions are scored after training on the earlier ones: far better than chance
    assert all(p.auc > 0.55 for p in result.partitions[1:]) and result.partitions[3].auc > 0.65
    assert result.mean_auc() == pytest.approx(np.mean([p.auc for p in result.partitions[1:]]))


def test_frozen_vocabulary_sees_churn_and_unified_keeps_its_auc():
    churn = {**SYNTHETIC, "churn_period": 3}  # all ids are new after 3 partitions
    cfg = {"partitions": 6, "dataset_options": churn, "budget": "1"}
    unified = run_online(config(embedding="unified", **cfg))
    frozen = run_online(config(embedding="collisionless", **{**cfg, "budget": None}))
    unseen = [p.unseen_share for p in unified.partitions]
    assert unseen[0] == 0 and all(b >= a for a, b in itertools.pairwise(unseen)) and unseen[-1] == 1
    assert unseen == [p.unseen_share for p in frozen.partitions]  # same stream, same frozen vocabulary
    assert unified.embedding_params == frozen.embedding_params == frozen.collisionless_params
    late = slice(3, None)
    assert frozen.mean_auc(3) == 0.5  # every value falls into the OOV rows: one prediction for all
    assert unified.mean_auc(3) > 0.6, (
        [p.auc for p in unified.partitions[late]],
        [p.auc for p in frozen.partitions[late]],
    )


def test_avazu_hour_files_one_file_by_column_and_by_rows_agree(tmp_path):
    stream = SyntheticConfig(cardinalities=AVAZU_CARDINALITIES, churn_rows=1_500, seed=2)
    files = write_avazu_stream(tmp_path / "hours", stream, partitions=3, partition_rows=1_500)
    assert [f.name for f in files] == ["14102100.csv", "14102101.csv", "14102102.csv"]
    header = files[0].read_text().splitlines()[0]
    assert header.startswith("id,click,hour,C1,banner_pos,site_id")
    common = {"embedding": "hashing", "budget": "1/2"}
    by_file = run_online(avazu(tmp_path / "hours", **common))
    assert [p.name for p in by_file.partitions] == [f.name for f in files]
    assert [p.rows for p in by_file.partitions] == [1_500] * 3
    # the same rows as one time-ordered file, cut where the hour changes, or every 1,500 rows
    one = tmp_path / "all.csv"
    one.write_text(files[0].read_text() + "".join(f.read_text().split("\n", 1)[1] for f in files[1:]))
    by_hour = run_online(avazu(one, partition_column="hour_of_day", **common))
    by_rows = run_online(avazu(one, partition_rows=1_500, **common))
    assert [p.name for p in by_hour.partitions] == ["hour_of_day=0", "hour_of_day=1", "hour_of_day=2"]
    for other in (by_hour, by_rows):
        assert [p.auc for p in other.partitions] == [p.auc for p in by_file.partitions]
        for a, b in zip(by_file.model.state_dict().values(), other.model.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    # by hour, read lazily: a partition left unread (as a resumed run skips one) is read past, not lost
    _, parts = iter_partitions(avazu(one, partition_column="hour_of_day", **common), BadRows())
    next(parts)
    second = next(parts)
    frames = second.load()
    assert not isinstance(frames, list)
    rows = sum(f.height for f in frames)
    assert second.name == "hour_of_day=1" and rows == 1_500


def test_checkpoints_results_and_resume_of_a_finished_run(tmp_path):
    cfg = config(checkpoint_dir=tmp_path / "run", checkpoint_every_steps=5)
    first = run_online(cfg)
    assert (tmp_path / "run" / "progressive.json").is_file()
    model, _ = load_model(tmp_path / "run" / "model.pt")
    for a, b in zip(first.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="holds a run already"):
        run_online(cfg)
    again = run_online(config(checkpoint_dir=tmp_path / "run", resume=True))  # nothing left to do
    assert again.resumed_from.endswith("last.pt")
    assert again.partitions == first.partitions
    # a longer stream continues the finished one
    longer = run_online(config(checkpoint_dir=tmp_path / "run", resume=True, partitions=5))
    assert longer.partitions[:4] == first.partitions and len(longer.partitions) == 5
    with pytest.raises(CheckpointError, match="learning_rate"):
        run_online(config(checkpoint_dir=tmp_path / "run", resume=True, learning_rate=5e-3))


def test_resume_mid_partition_gives_identical_results(tmp_path, monkeypatch):
    reference = run_online(config(embedding="hashing", budget="1/4"))
    cfg = config(
        embedding="hashing", budget="1/4", checkpoint_dir=tmp_path, checkpoint_every_steps=3, resume=True
    )
    # the 14th step (partition 1, batch 5) is interrupted: between checkpoints
    interrupted(lambda: run_online(cfg), 13, monkeypatch)
    resumed = run_online(cfg)
    assert resumed.resumed_from is not None
    assert resumed.partitions == reference.partitions
    for a, b in zip(reference.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_config_is_validated_up_front(tmp_path):
    with pytest.raises(ValueError, match="partition_rows and partitions"):
        OnlineConfig(dataset="synthetic")
    with pytest.raises(ValueError, match="valid options are"):
        config(dataset_options={"churn": 5})
    with pytest.raises(ValueError, match="budget"):
        config(budget="-1/4")
    with pytest.raises(ValueError, match="extra"):
        OnlineConfig(**{**BASE, "partiton_rows": 5})
    with pytest.raises(ValueError, match="vocabulary_partitions"):
        config(vocabulary_partitions=5)
    with pytest.raises(ValueError, match="set data"):
        OnlineConfig(dataset="avazu")
    with pytest.raises(ValueError, match=r"the features are \['C1', 'C2', 'C3', 'C4'\]"):
        run_online(config(chunks={"C9": 2}))
    files = write_avazu_stream(
        tmp_path, SyntheticConfig(cardinalities=AVAZU_CARDINALITIES), partitions=1, partition_rows=10
    )
    with pytest.raises(ValueError, match="valid columns are"):
        run_online(OnlineConfig(dataset="avazu", data=files[0], partition_column="hour"))
    with pytest.raises(ValueError, match="partition_rows or partition_column"):
        run_online(OnlineConfig(dataset="avazu", data=files[0]))
    with pytest.raises(FileNotFoundError, match="no partition files"):
        run_online(OnlineConfig(dataset="avazu", data=tmp_path, partition_glob="*.tsv"))


def test_table_plot_and_benchmark_yaml(tmp_path):
    results = [
        run_online(config(embedding=method, partitions=3, budget=None if method == "collisionless" else "1"))
        for method in ("collisionless", "unified")
    ]
    table = progressive_table(results)
    assert "| 0 (vocabulary) | rows 0-3999 |" in table and "collisionless (frozen vocab)" in table
    assert "unified @ 1" in table and "**mean AUC, partitions 1+**" in table
    png = plot_progressive(results, tmp_path / "plot.png", "test")
    assert png.read_bytes()[:4] == b"\x89PNG"
    yaml_path = tmp_path / "bench.yaml"
    yaml_path.write_text("name: t\nmethods: [collisionless, unified]\nbudgets: ['1', '1/4']\nsettings: {}\n")
    bench = OnlineBenchmark.from_yaml(yaml_path)
    with pytest.raises(ValueError, match="partition_rows"):
        bench.configs(tmp_path)
    assert math.isnan(results[0].mean_auc(skip=3))


def test_benchmark_on_a_generated_avazu_stream(tmp_path):
    cards = ", ".join(str(c) for c in AVAZU_CARDINALITIES)
    yaml_path = tmp_path / "bench.yaml"
    yaml_path.write_text(
        "name: tiny\ndescription: a tiny check\nmethods: [collisionless, hashing, unified]\n"
        "budgets: ['1/2']\n"
        f"avazu_stream:\n  directory: {tmp_path / 'hours'}\n  partitions: 3\n  partition_rows: 800\n"
        f"  synthetic: {{cardinalities: [{cards}], churn_rows: 800, seed: 1}}\n"
        f"settings: {{dataset: avazu, data: {tmp_path / 'hours'}, model: fm, embedding_dim: 4, threads: 1}}\n"
    )
    results = run_online_benchmark(yaml_path, tmp_path / "out", tmp_path / "work")
    assert [r.embedding for r in results] == ["collisionless", "hashing", "unified"]
    assert [r.budget for r in results] == ["1", "1/2", "1/2"]
    data, loaded = load_online_results(tmp_path / "out" / "tiny.json")
    assert [r.partitions for r in loaded] == [r.partitions for r in results]
    assert data["command"].startswith("python -m featmux.training.online")
    table = (tmp_path / "out" / "tiny.md").read_text()
    assert "| 2 | 14102102.csv | 800 |" in table and "wall time per run" in table
    assert (tmp_path / "out" / "tiny.png").read_bytes()[:4] == b"\x89PNG"
    again = run_online_benchmark(yaml_path, tmp_path / "out", tmp_path / "work")  # resumes finished runs
    assert [r.partitions for r in again] == [r.partitions for r in results]


def test_empty_partition_file_is_a_clear_error(tmp_path):
    files = write_avazu_stream(
        tmp_path, SyntheticConfig(cardinalities=AVAZU_CARDINALITIES), partitions=2, partition_rows=300
    )
    files[1].write_text("")
    with pytest.raises(DataError, match=r"14102101\.csv: file is empty"):
        run_online(avazu(tmp_path))


def test_skip_bad_rows_in_a_partition(tmp_path):
    files = write_avazu_stream(
        tmp_path, SyntheticConfig(cardinalities=AVAZU_CARDINALITIES), partitions=2, partition_rows=600
    )
    lines = files[1].read_text().splitlines()
    lines[5] = lines[5].replace(",", ";", 3)  # wrong field count
    lines[9] = lines[9][:20]  # truncated
    files[1].write_text("\n".join(lines) + "\n")
    messages = []
    result = run_online(avazu(tmp_path, skip_bad_rows=True), log=messages.append)
    assert [p.rows for p in result.partitions] == [600, 598]
    assert "skipped 2 bad row(s)" in result.bad_rows
    assert any("skipped 2 bad row(s)" in m for m in messages)


def test_nan_inputs_are_reported_with_the_partition_and_rows(tmp_path, monkeypatch):
    from featmux.training.online import loop
    from featmux.training.trainer import NonFiniteLossError

    encode = loop.encode_frame

    def poisoned(frame, schema):  # each 4000-row partition is read as one frame
        chunk = encode(frame, schema)
        if len(chunk) > 17:
            chunk.dense[17, 0] = float("nan")
        return chunk

    monkeypatch.setattr(loop, "encode_frame", poisoned)
    options = {**SYNTHETIC, "num_numeric": 1, "numeric_missing": 0.0}
    with pytest.raises(NonFiniteLossError, match=r"partition 0 \(rows 0-3999\), pass 0, batch \d") as err:
        run_online(config(dataset_options=options, checkpoint_dir=tmp_path))
    assert "rows 17 of partition rows 0-3999" in str(err.value)
    assert "NaN/Inf numeric features" in str(err.value) and err.value.dump.is_file()
    skipped = run_online(config(dataset_options=options, on_nonfinite="skip"))
    assert skipped.partitions[-1].skipped_batches == 4  # row 17 of every partition
    assert all(torch.isfinite(p).all() for p in skipped.model.parameters())


@pytest.mark.real_data
def test_criteo_file_cut_into_day_like_blocks(shared_data):
    data = shared_data / "criteo" / "wide_resdnn" / "train.csv"  # Kaggle TSV rows, no header
    cfg = {"dataset": "criteo", "data": data, "dataset_options": {}, "partitions": 3, "partition_rows": 2_400}
    result = run_online(OnlineConfig(**{**BASE, **cfg, "embedding": "unified", "budget": "1/4"}))
    assert [p.rows for p in result.partitions] == [2_400] * 3
    assert 0 < result.partitions[1].unseen_share < 1  # real ids: a long tail of new values
    assert result.partitions[2].auc > 0.6


def test_partition_ending_in_a_one_row_batch_trains_batchnorm_models():
    # 4,001-row partitions in batches of 500: each ends in one row, which BatchNorm cannot train on
    options = {"cross_layers": 1, "hidden": [16], "batch_norm": True}
    result = run_online(config(partition_rows=4_001, partitions=2, batch_size=500, model_options=options))
    assert len(result.partitions) == 2


class _DeviceSpy(torch.nn.Module):
    """A model living on `meta` (a device other than the CPU the batches are built on) that records
    the devices of what it is handed, and answers with CPU logits."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))
        self.seen: list[set[torch.device]] = []

    def forward(self, sparse, dense):
        self.seen.append({sparse.ids.device, dense.device, *(b.values.device for b in sparse.bags)})
        return torch.linspace(-1, 1, sparse.batch_size)


def test_progressive_validation_feeds_the_model_on_its_device():
    cfg = config()
    schema, parts = iter_partitions(cfg, BadRows())
    chunk = _encode(next(parts).load(), schema)
    spy = _DeviceSpy()
    metrics, _ = _progressive(spy, chunk, 1500)  # type: ignore[arg-type]
    assert len(spy.seen) == 3 and all(seen == {next(spy.parameters()).device} for seen in spy.seen)
    assert metrics.rows == 4_000


def test_bad_row_counts_survive_a_resume(tmp_path, monkeypatch):
    files = write_avazu_stream(
        tmp_path / "hours",
        SyntheticConfig(cardinalities=AVAZU_CARDINALITIES),
        partitions=3,
        partition_rows=600,
    )
    lines = files[0].read_text().splitlines()
    lines[5] = lines[5].replace(",", ";", 3)  # two bad rows in partition 0, one in partition 2
    lines[9] = lines[9][:20]
    files[0].write_text("\n".join(lines) + "\n")
    lines = files[2].read_text().splitlines()
    lines[3] = lines[3][:20]
    files[2].write_text("\n".join(lines) + "\n")
    cfg = avazu(tmp_path / "hours", skip_bad_rows=True, checkpoint_dir=tmp_path / "run", resume=True)
    reference = run_online(avazu(tmp_path / "hours", skip_bad_rows=True))
    assert "skipped 3 bad row(s)" in reference.bad_rows
    interrupted(lambda: run_online(cfg), 2 + 1, monkeypatch)  # partition 0: 2 batches; stop inside 1
    resumed = run_online(cfg)
    assert resumed.resumed_from is not None
    assert resumed.bad_rows == reference.bad_rows  # partition 0's two rows were not read again
    assert resumed.partitions == reference.partitions


def test_resume_refuses_a_rewritten_partition_and_the_benchmark_starts_over(tmp_path):
    write_avazu_stream(
        tmp_path / "hours",
        SyntheticConfig(cardinalities=AVAZU_CARDINALITIES),
        partitions=2,
        partition_rows=300,
    )
    cfg = avazu(tmp_path / "hours", checkpoint_dir=tmp_path / "run", resume=True)
    run_online(cfg)
    write_avazu_stream(  # same file names, other content
        tmp_path / "hours",
        SyntheticConfig(cardinalities=AVAZU_CARDINALITIES, seed=9),
        partitions=2,
        partition_rows=300,
    )
    with pytest.raises(CheckpointError, match=r"partition 0 \(14102100.csv\) is not the content"):
        run_online(cfg)

    cards = ", ".join(str(c) for c in AVAZU_CARDINALITIES)
    yaml_path = tmp_path / "bench.yaml"

    def bench(seed: int) -> list:
        yaml_path.write_text(
            "name: tiny\nmethods: [unified]\nbudgets: ['1/2']\n"
            f"avazu_stream:\n  directory: {tmp_path / 'bench-hours'}\n"
            "  partitions: 2\n  partition_rows: 300\n"
            f"  synthetic: {{cardinalities: [{cards}], seed: {seed}}}\n"
            f"settings: {{dataset: avazu, data: {tmp_path / 'bench-hours'}, model: fm, embedding_dim: 4}}\n"
        )
        return run_online_benchmark(yaml_path, tmp_path / "out", tmp_path / "work")

    first, other = bench(1), bench(2)
    assert other[0].resumed_from is None  # a new stream spec: fresh runs, not the old results
    assert [p.auc for p in other[0].partitions] != [p.auc for p in first[0].partitions]
    assert bench(2)[0].resumed_from is not None  # the same spec again resumes


def test_partitions_stream_through_bounded_shards(tmp_path, monkeypatch):
    """A partition is read lazily and trained from memory-mapped shards on disk: with 700-row shards
    (a 4000-row partition in 6, batches crossing shard boundaries) the results are those of one shard."""
    from featmux.training.online import loop

    reference = run_online(config(embedding="hashing", budget="1/4"))
    monkeypatch.setattr(loop, "PARTITION_SHARD_ROWS", 700)
    written = []
    stored = loop._StoredPartition.__init__

    def spy(self, frames, schema, directory):
        assert not isinstance(frames, list)  # frames come lazily from the source
        stored(self, frames, schema, directory)
        written.append(len(self.shards))

    monkeypatch.setattr(loop._StoredPartition, "__init__", spy)
    sharded = run_online(config(embedding="hashing", budget="1/4", checkpoint_dir=tmp_path / "run"))
    assert written == [6, 6, 6, 6]
    assert sharded.partitions == reference.partitions
    for a, b in zip(reference.model.state_dict().values(), sharded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list((tmp_path / "run").glob(".featmux-stream-*"))  # the shards are gone afterwards


@pytest.mark.parametrize("form", [{"precision": "int4"}, {"prune": 0.5}])
def test_online_runs_score_and_save_the_served_tables(tmp_path, form):
    cfg = config(embedding="hashing", budget="1/2", partitions=2, checkpoint_dir=tmp_path / "run", **form)
    result = run_online(cfg)
    untrained, chunk = untrained_model(cfg)
    fp32_bytes = untrained.embedding.memory_bytes()
    fp32 = _progressive(untrained, chunk, 4096)[0]
    untrained.embedding = ServingForm.of(cfg, untrained.embedding).apply(untrained.embedding)
    served = _progressive(untrained, chunk, 4096)[0]
    # partition 0 was scored by the served tables of the untrained model, not by its fp32 ones
    assert result.partitions[0].logloss == pytest.approx(served.logloss, abs=1e-12)
    assert abs(fp32.logloss - served.logloss) > 1e-6
    assert result.embedding_bytes == untrained.embedding.memory_bytes() < fp32_bytes
    assert result.fp32 == {"embedding_bytes": fp32_bytes}
    assert result.model.embedding.memory_bytes() == fp32_bytes  # training went on with the fp32 tables
    saved, _ = load_model(tmp_path / "run" / "model.pt")  # what export and score read: the served form
    assert saved.embedding.config() == untrained.embedding.config()
    assert saved.embedding.memory_bytes() == result.embedding_bytes
    assert result.as_dict()["embedding_bytes"] == result.embedding_bytes
    assert "embedding bytes, served" in progressive_table([result])


@pytest.mark.parametrize("bits", [8, 4])
def test_online_qat_bits_scores_and_saves_its_integer_table(tmp_path, bits):
    options = {"qat_bits": bits}
    cfg = config(
        embedding="unified", budget="1/2", partitions=2, embedding_options=options, checkpoint_dir=tmp_path
    )
    result = run_online(cfg)
    trained = result.model.embedding
    precision = "int8" if bits == 8 else "int4"
    assert result.embedding_bytes == trained.serving_bytes() < trained.memory_bytes()
    assert result.fp32 == {"embedding_bytes": trained.memory_bytes()}
    saved, _ = load_model(tmp_path / "model.pt")
    assert saved.embedding.config()["precision"] == precision
    assert saved.embedding.memory_bytes() == result.embedding_bytes
    untrained, chunk = untrained_model(cfg)
    untrained.embedding = quantize_embedding(untrained.embedding, precision)
    served = _progressive(untrained, chunk, 4096)[0]
    assert result.partitions[0].logloss == pytest.approx(served.logloss, abs=1e-12)


def test_online_qat_trains_on_the_rows_it_serves():
    cfg = config(embedding="hashing", budget="1/2", partitions=2, precision="int8", qat=True)
    result = run_online(cfg)
    _, chunk = untrained_model(cfg)
    batch = chunk_to_batch(chunk.take(np.arange(len(chunk))))
    trained = result.model.eval()
    with torch.no_grad():
        logits = trained(batch.sparse, batch.dense)
        trained.embedding = quantize_embedding(copy.deepcopy(trained.embedding), "int8")
        served = trained(batch.sparse, batch.dense)
    # quantization-aware: the fp32 master tables already read the int8 rows (float rounding apart)
    torch.testing.assert_close(logits, served, rtol=0, atol=1e-5)
    assert result.embedding_bytes < result.fp32["embedding_bytes"]
def test_benchmark_arms_with_options_run_at_the_same_bytes(tmp_path):
    pytest.importorskip("torchrec")
    settings = {**BASE, "partitions": 3, "partition_rows": 2_000}
    arms = [
        "hashing",
        {"name": "zch-lfu", "embedding": "zch", "embedding_options": {"eviction": "lfu"}},
        {"name": "zch-lru", "embedding": "zch", "embedding_options": {"eviction": "lru"}},
    ]
    bench = {"name": "arms", "methods": arms, "budgets": ["1/4"], "settings": settings}
    yaml_path = tmp_path / "bench.yaml"
    yaml_path.write_text(yaml.safe_dump(bench))
    runs = OnlineBenchmark.from_yaml(yaml_path).runs(tmp_path / "work")
    assert [(name, c.embedding, c.embedding_options) for name, c in runs] == [
        ("hashing", "hashing", {}),
        ("zch-lfu", "zch", {"eviction": "lfu"}),
        ("zch-lru", "zch", {"eviction": "lru"}),
    ]
    assert runs[2][1].checkpoint_dir == tmp_path / "work" / "arms" / "zch-lru-1_4"
    results = run_online_benchmark(yaml_path, tmp_path / "out", tmp_path / "work")
    target = round(results[0].collisionless_params * 4 / 4)  # a quarter of the fp32 collisionless bytes
    for r in results:
        assert r.embedding_bytes is not None and 0.9 * target < r.embedding_bytes <= target
        assert all(math.isfinite(p.auc) for p in r.partitions[1:])
    assert results[1].partitions != results[2].partitions  # the eviction policy matters under churn
    table = (tmp_path / "out" / "arms.md").read_text()
    assert "zch-lfu @ 1/4" in table and "zch-lru @ 1/4" in table and "| embedding bytes, served |" in table
    _, loaded = load_online_results(tmp_path / "out" / "arms.json")
    assert [r.label for r in loaded] == ["hashing", "zch-lfu", "zch-lru"]
    yaml_path.write_text(yaml.safe_dump({**bench, "seeds": [0, 1]}))
    seeded = OnlineBenchmark.from_yaml(yaml_path).runs(tmp_path / "work")
    assert [(n, c.seed, c.checkpoint_dir.name) for n, c in seeded[:2]] == [
        ("hashing", 0, "hashing-1_4-s0"),
        ("hashing", 1, "hashing-1_4-s1"),
    ]
    assert seed_summary(results) == ""  # one seed
    twins = [dataclasses.replace(r, config={**r.config, "seed": s}) for r in results for s in (0, 1)]
    summary = seed_summary(twins)
    lru = results[2]
    assert f"| zch-lru @ 1/4 | 0, 1 | {lru.mean_auc():.4f} ± 0.0000 | {lru.embedding_bytes:,} |" in summary
    twice = {**bench, "methods": [arms[1], {**arms[2], "name": "zch-lfu"}]}
    yaml_path.write_text(yaml.safe_dump(twice))
    with pytest.raises(ValueError, match="two arms are named"):
        OnlineBenchmark.from_yaml(yaml_path)
