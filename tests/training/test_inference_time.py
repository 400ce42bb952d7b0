"""Inference time: the model's forward on one held-out batch, timed in the form it serves."""

from __future__ import annotations

import pytest
import torch
from helpers import PLANTED_SCHEMA, planted_chunk

from featmux.data.cache import EncodedDataset
from featmux.embeddings import EmbeddingSpec, build_embedding
from featmux.models import build_model
from featmux.training.inference_time import INFERENCE_ROWS, time_inference


def _model(train: EncodedDataset) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = EmbeddingSpec("collisionless", 4)
    emb = build_embedding(PLANTED_SCHEMA.categorical, spec, train.fit_vocabulary())
    return build_model("dcnv2", emb, len(PLANTED_SCHEMA.numeric), {"cross_layers": 1, "hidden": [8]})


def test_times_one_batch_of_4096_rows_in_eval_mode(planted, tmp_path):
    _, train, _ = planted  # 4000 rows in two shards: a batch of 4000, across both
    big = EncodedDataset.write(tmp_path / "big", PLANTED_SCHEMA, [planted_chunk(5000, 7)], shard_rows=3000)
    model = _model(train)
    modes = []
    model.register_forward_pre_hook(lambda m, _args: modes.append(m.training))
    model.train()
    timing = time_inference(model, big, "test")
    assert (timing.rows, timing.repeats, timing.split) == (INFERENCE_ROWS, 10, "test")
    assert modes == [False] * 12 and model.training  # eval mode for every call, restored after
    assert timing.median_ms > 0 and timing.threads == torch.get_num_threads()
    assert 10 * timing.median_ms / 1e3 < timing.seconds < 1.0  # warm-up and timed calls, well under 1 s
    assert set(timing.as_dict()) == {"rows", "median_ms", "repeats", "threads", "split", "seconds"}
    small = time_inference(model, train, "valid")
    assert small.rows == 4000 and small.split == "valid"  # the whole split when it is smaller


def test_a_slow_model_stops_after_three_timed_calls(planted):
    _, train, valid = planted
    timing = time_inference(_model(train), valid, max_seconds=0.0)
    assert timing.repeats == 3 and timing.rows == 2000
    with pytest.raises(ValueError, match="rows"):
        time_inference(_model(train), valid, rows=0)


def test_experiment_times_the_served_tables(tmp_path, monkeypatch):
    """An int8 run times the quantized layer it serves, and records the timing in its result."""
    from featmux.training import experiment

    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    timed = []

    def spy(model, dataset, split):
        timed.append(model.embedding.memory_bytes())
        return time_inference(model, dataset, split)

    monkeypatch.setattr(experiment, "time_inference", spy)
    tiny = {"dataset_options": {"rows": 1200, "cardinalities": [10, 100, 1000]}, "embedding_dim": 4}
    run = {"epochs": 1, "batch_size": 256, "threads": 1, "progress": False}
    config = experiment.ExperimentConfig(**tiny, **run, embedding="hashing", budget="1/4", precision="int8")
    result = experiment.run_experiment(config)
    assert timed == [result["embedding_bytes"]]  # the int8 tables, not the fp32 ones
    assert result["embedding_bytes"] < result["fp32"]["embedding_bytes"]
    inference = result["inference"]
    assert inference["rows"] == result["rows"]["test"] and inference["split"] == "test"
    assert inference["threads"] == 1 and inference["repeats"] == 10 and inference["median_ms"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_times_a_model_on_the_gpu(planted):
    _, train, valid = planted
    timing = time_inference(_model(train).cuda(), valid, "valid")
    assert timing.rows == 2000 and timing.repeats == 10 and timing.median_ms > 0
