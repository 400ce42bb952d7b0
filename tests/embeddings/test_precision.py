"""Post-training row-wise quantization of table methods: bytes, accuracy, round trip, and refusals."""

from __future__ import annotations

import pytest
import torch

from featmux.embeddings import Budget, EmbeddingSpec, build_embedding, embedding_from_config
from featmux.embeddings.precision import Precision, dequantize_rows, quantize_embedding, quantize_rows

DIM = 8


@pytest.mark.parametrize("std", [1.0, 1e-3])  # 1e-3: float16 subnormal steps, as in freshly initialized rows
@pytest.mark.parametrize(("precision", "bound"), [("fp16", 1e-3), ("int8", 1 / 255), ("int4", 1 / 15)])
def test_rows_round_trip_within_half_a_step(precision, bound, std):
    w = torch.randn(50, 7) * std
    q = quantize_rows(w, Precision(precision))
    back = dequantize_rows(q["codes"], q.get("scale"), q.get("bias"), Precision(precision), 7)
    span = (w.max(1).values - w.min(1).values).unsqueeze(1)
    assert ((back - w).abs() <= bound * span + 2e-3 * w.abs().max()).all()


@pytest.mark.parametrize(
    "spec",
    [
        EmbeddingSpec("hashing", DIM, Budget.parse("1/4")),
        EmbeddingSpec(
            "unified",
            DIM,
            Budget.parse("1/4"),
            options={"chunks": {"genres": 2}, "private_max_cardinality": 5},
        ),
        EmbeddingSpec("collisionless", DIM),
    ],
    ids=lambda s: s.method,
)
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_quantized_layers_store_fewer_bytes_and_keep_their_output(
    features, vocabulary, sparse, spec, precision, tmp_path
):
    layer = build_embedding(features, spec, vocabulary)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    before = layer(sparse).detach()
    fp32_bytes, rows = layer.memory_bytes(), sum(t.num_rows for t in layer.table_modules())
    keys = fp32_bytes - rows * DIM * 4  # vocabulary keys stay as they are
    served = quantize_embedding(layer, precision)
    per_row = {"fp16": 2 * DIM, "int8": DIM + 4, "int4": DIM // 2 + 4}[precision]
    assert served.memory_bytes() == rows * per_row + keys
    assert served.memory_bytes() == sum(t.numel() * t.element_size() for t in served.state_dict().values())
    out = served(sparse)
    tolerance = {"fp16": 1e-2, "int8": 0.05, "int4": 0.6}[precision]
    torch.testing.assert_close(out, before, atol=tolerance, rtol=0)
    torch.save({"config": served.config(), "state": served.state_dict()}, tmp_path / "q.pt")
    saved = torch.load(tmp_path / "q.pt", weights_only=True)
    rebuilt = embedding_from_config(features, saved["config"])
    rebuilt.load_state_dict(saved["state"])
    torch.testing.assert_close(rebuilt(sparse), out, rtol=0, atol=0)


def test_precision_refuses_methods_that_are_not_tables(features, vocabulary):
    layer = build_embedding(features, EmbeddingSpec("qr", DIM, Budget.parse("1/4")), vocabulary)
    with pytest.raises(ValueError, match="--precision applies to table methods"):
        quantize_embedding(layer, "int8")


def test_quantization_aware_rows_are_what_int8_serves(features, vocabulary, sparse):
    from featmux.embeddings.base import fake_quantize_rows

    layer = build_embedding(features, EmbeddingSpec("unified", DIM, Budget.parse("1/4")), vocabulary)
    with torch.no_grad():
        layer.shared.weight.normal_()
    layer.set_quantization_aware(255)
    out = layer(sparse)
    (out * torch.randn_like(out)).sum().backward()
    assert (
        layer.shared.weight.grad is not None and layer.shared.weight.grad.abs().sum() > 0
    )  # straight through
    torch.testing.assert_close(
        layer(sparse)[:, 0],
        fake_quantize_rows(layer.shared.weight, 255)[layer.shared.univalent_rows(sparse.ids)[:, 0]],
    )
    served = quantize_embedding(layer, "int8")  # the served rows: the same grid, up to float16 scales
    torch.testing.assert_close(served(sparse), out.detach(), atol=2e-3, rtol=0)


def test_qat_is_checked_up_front(features, vocabulary):
    from featmux.training.experiment import ExperimentConfig

    with pytest.raises(ValueError, match="qat trains for integer rows"):
        ExperimentConfig(qat=True)
    layer = build_embedding(features, EmbeddingSpec("robe", DIM, Budget.parse("1/4")), vocabulary)
    with pytest.raises(ValueError, match="needs table layers"):
        layer.set_quantization_aware(255)


@pytest.mark.parametrize("form", ["int8", "prune"])
def test_a_served_model_reports_its_tables(features, vocabulary, form):
    # table_parameters(), num_rows and a model's dense_parameters() once the weights are replaced
    from featmux.embeddings import prune_embedding
    from featmux.models import build_model

    layer = build_embedding(features, EmbeddingSpec("unified", DIM, Budget.parse("1/4")), vocabulary)
    rows = [t.num_rows for t in layer.table_modules()]
    served = quantize_embedding(layer, "int8") if form == "int8" else prune_embedding(layer, 0.5)
    model = build_model("dcnv2", served, 2, {"hidden": [8], "cross_layers": 1})
    assert [t.num_rows for t in served.table_modules()] == rows
    assert served.table_parameters() == [] and all(t.table_parameters() == [] for t in served.table_modules())
    assert served.num_parameters() == 0
    assert served.memory_bytes() == sum(t.numel() * t.element_size() for t in served.state_dict().values())
    assert {id(p) for p in model.dense_parameters()} == {id(p) for p in model.parameters()}
