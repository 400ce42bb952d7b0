"""bf16 autocast: detected from the CPU flags, forced by the flag, recorded in results, on in the step."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import PLANTED_SCHEMA, planted_chunk
from typer.testing import CliRunner

from featmux.cli.main import app
from featmux.data.cache import EncodedDataset
from featmux.embeddings import EmbeddingSpec, build_embedding
from featmux.models import build_model
from featmux.training.config import TrainConfig
from featmux.training.experiment import ExperimentConfig
from featmux.training.precision import cpu_flags, native_bf16, resolve_bf16
from featmux.training.trainer import Trainer

AMD_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n"
XEON_AMX = "processor\t: 0\nflags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n"


def _cpuinfo(tmp_path, text: str):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_native_only_with_avx512_bf16_or_amx(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    avx2, amx = _cpuinfo(tmp_path / "a", AMD_AVX2), _cpuinfo(tmp_path / "b", XEON_AMX)
    assert cpu_flags(avx2) == ("avx2", "fma")
    assert native_bf16("cpu", avx2)[0] is False
    native, why = native_bf16("cpu", amx)
    assert native and "avx512_bf16" in why and "amx_bf16" in why
    only_bf16 = _cpuinfo(tmp_path, "flags : avx512f avx512_bf16\n")
    assert native_bf16("cpu", only_bf16)[0]
    assert native_bf16("cpu", tmp_path / "missing")[0] is False  # unreadable: never assume native


def test_auto_follows_the_hardware_and_a_request_wins(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    avx2, amx = _cpuinfo(tmp_path / "a", AMD_AVX2), _cpuinfo(tmp_path / "b", XEON_AMX)
    assert resolve_bf16(None, "cpu", amx).enabled
    assert not resolve_bf16(None, "cpu", avx2).enabled
    forced = resolve_bf16(True, "cpu", avx2)
    assert forced.enabled and not forced.native and forced.reason.startswith("forced on")
    assert not resolve_bf16(False, "cpu", amx).enabled
    record = resolve_bf16(None, "cpu", amx).as_dict()
    assert record["bf16"] is True and record["bf16_requested"] == "auto" and "cpu_flags" in record


def test_auto_leaves_small_cpu_batches_in_float32(tmp_path):
    amx = _cpuinfo(tmp_path, XEON_AMX)
    assert resolve_bf16(None, "cpu", amx, batch_size=4096).enabled
    small = resolve_bf16(None, "cpu", amx, batch_size=128)
    assert not small.enabled and small.native and "batch 128 < 512" in small.reason
    assert resolve_bf16(True, "cpu", amx, batch_size=128).enabled  # a request still wins
    assert ExperimentConfig(batch_size=128).train_config().autocast_bf16 is False


def test_run_config_turns_the_choice_into_autocast():
    assert ExperimentConfig(bf16=True).train_config().autocast_bf16 is True
    assert ExperimentConfig(bf16=False).train_config().autocast_bf16 is False
    auto = ExperimentConfig(batch_size=4096).train_config().autocast_bf16
    assert auto is resolve_bf16(None).enabled  # this machine's own answer


def test_autocast_is_on_in_the_step_and_weights_stay_float32(tmp_path):
    train = EncodedDataset.write(tmp_path / "train", PLANTED_SCHEMA, [planted_chunk(512, 1)])
    seen: list[torch.dtype] = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        spec = EmbeddingSpec("collisionless", 4)
        embedding = build_embedding(PLANTED_SCHEMA.categorical, spec, train.fit_vocabulary())
        model = build_model("deepfm", embedding, len(PLANTED_SCHEMA.numeric), {"hidden": [8]})
        linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        handle = linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        trainer = Trainer(model, TrainConfig(autocast_bf16=bf16, progress=False), PLANTED_SCHEMA)
        trainer.train_step(next(iter(train.batches(256))), "test")
        handle.remove()
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert seen == [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("flag", ["--bf16", "--no-bf16"])
def test_train_records_and_prints_the_choice(tmp_path, monkeypatch, flag):
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    args = ["train", "--dataset-option", "rows=1200", "--model", "deepfm", "--model-option", "hidden=[8]"]
    args += ["--epochs", "1", "--threads", "1", "--no-progress", "--embedding-dim", "4", flag]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    precision = json.loads(out.read_text())["autocast"]
    assert precision["bf16"] is (flag == "--bf16") and precision["bf16_requested"] is (flag == "--bf16")
    assert "bf16 autocast " + ("on" if flag == "--bf16" else "off") in result.output
    assert "cpu_flags" in json.loads(out.read_text())["environment"]
