"""Verdicts per budget and the unified frontier check, on hand-made result sets."""

from __future__ import annotations

import json

import pytest

from featmux.benchmarks.report import CellRecord, aggregate, write_report
from featmux.benchmarks.verdicts import (
    Margin,
    Noise,
    budget_verdicts,
    format_ratio,
    frontier_checks,
    markdown_frontier,
    markdown_verdicts,
)

BYTES = {"1": 16000, "1/4": 4000, "1/16": 1000}


def cells(aucs: dict[tuple[str, str], list[float]], train=None, infer=None) -> list[CellRecord]:
    """Records for {(method, budget): AUC per seed}; train s and inference ms per method (default 10, 2)."""
    train, infer = train or {}, infer or {}
    out = []
    for (method, budget), values in aucs.items():
        for seed, auc in enumerate(values):
            result = {
                "dataset": "d",
                "model": "m",
                "embedding": method.split("-")[0],
                "seed": seed,
                "test_auc": auc,
                "embedding_params": BYTES[budget] // 4,
                "embedding_bytes": BYTES[budget] - len(method),  # each method a little under the budget
                "train_seconds": train.get(method, 10.0),
                "samples_per_second": 1000.0,
                "bench": {"dataset": "d", "model": "m", "method": method, "budget": budget, "seed": seed},
            }
            if infer.get(method, 2.0) is not None:
                result["inference"] = {"rows": 4096, "median_ms": infer.get(method, 2.0), "repeats": 10}
            out.append(CellRecord.from_result(result))
    return out


ZOO = {
    ("collisionless", "1"): [0.80, 0.81, 0.82],
    ("hashing", "1/4"): [0.70, 0.72, 0.74],
    ("unified", "1/4"): [0.75, 0.76, 0.77],
    ("unified-int8", "1/4"): [0.7605, 0.7615, 0.7695],  # 0.7638 ± 0.0049: ahead of unified within noise
    ("robe", "1/4"): [0.74],  # one seed
    ("hashing", "1/16"): [0.60, 0.60, 0.63],
    ("unified", "1/16"): [0.70, 0.71, 0.72],
    ("qr", "1/16"): [0.73, 0.74, 0.75],
    ("mde-unified", "1/16"): [0.69, 0.70, 0.71],  # "unified" in the name, not the unified family
}


@pytest.fixture
def verdicts():
    records = cells(ZOO, train={"qr": 20.0, "unified-int8": 12.0}, infer={"qr": 6.0, "robe": None})
    return {v.budget: v for v in budget_verdicts(aggregate(records))}


def test_methods_ranked_by_mean_auc_with_collisionless_as_reference(verdicts):
    assert list(verdicts) == ["1/4", "1/16"]  # largest budget first; collisionless has none of its own
    quarter, sixteenth = verdicts["1/4"], verdicts["1/16"]
    assert [r.method for r in quarter.ranking] == ["unified-int8", "unified", "robe", "hashing"]
    assert [r.method for r in sixteenth.ranking] == ["qr", "unified", "mde-unified", "hashing"]
    assert quarter.reference.method == "collisionless" and sixteenth.reference is quarter.reference


def test_margins_over_the_runner_up_and_unified(verdicts):
    sixteenth = verdicts["1/16"]
    runner = sixteenth.over_runner_up
    assert runner.second.method == "unified" and runner.value == pytest.approx(0.03)
    assert runner.noise is Noise.BEYOND  # 0.03 > both stds (0.01, 0.01)
    assert sixteenth.over_unified.value == pytest.approx(0.03)
    assert sixteenth.train_ratio(sixteenth.winner) == pytest.approx(2.0)
    assert sixteenth.inference_ratio(sixteenth.winner) == pytest.approx(3.0)
    assert sixteenth.summary() == (
        "At 1/16, **qr** wins with test AUC 0.7400 ± 0.0100: +0.0300 (0.7400 ± 0.0100 vs "
        "0.7100 ± 0.0100, beyond noise) over the runner-up unified. It takes 2.0x unified's train s "
        "and 3.0x unified's inference ms. Against collisionless: -0.0700 (0.7400 ± 0.0100 vs "
        "0.8100 ± 0.0100, beyond noise)."
    )


def test_a_margin_below_the_larger_std_is_within_noise(verdicts):
    quarter = verdicts["1/4"]
    margin = quarter.over_runner_up
    assert (
        margin.value == pytest.approx(0.0038, abs=1e-4) and margin.noise is Noise.WITHIN
    )  # 0.0038 < std 0.01
    assert quarter.summary().startswith(
        "At 1/4, **unified-int8** ranks first with test AUC 0.7638 ± 0.0049: +0.0038 (0.7638 ± 0.0049 vs "
        "0.7600 ± 0.0100, within noise) over the runner-up unified. It takes 1.2x unified's train s"
    )


def test_noise_floor_and_single_seeds():
    rows = {
        (r.method, r.budget): r
        for r in aggregate(
            cells(
                {
                    ("a", "1/4"): [0.7005, 0.7006, 0.7007],  # std 0.0001
                    ("b", "1/4"): [0.7000, 0.7001, 0.7002],  # 0.0005 behind a: below the 0.001 floor
                    ("c", "1/4"): [0.7200],
                    ("d", "1/4"): [0.7195],
                }
            )
        )
    }
    assert Margin(rows[("a", "1/4")], rows[("b", "1/4")]).noise is Noise.WITHIN
    one_seed = Margin(rows[("c", "1/4")], rows[("a", "1/4")])
    assert one_seed.value == pytest.approx(0.0194) and one_seed.noise is Noise.UNKNOWN
    assert one_seed.format() == "+0.0194 (0.7200 vs 0.7006 ± 0.0001, noise unknown: one seed)"
    assert Margin(rows[("c", "1/4")], rows[("d", "1/4")]).noise is Noise.WITHIN  # 0.0005: the floor


def test_times_are_n_a_where_not_measured_and_without_unified(verdicts):
    quarter = verdicts["1/4"]
    robe = quarter.ranking[2]
    assert quarter.train_ratio(robe) == pytest.approx(1.0) and quarter.inference_ratio(robe) is None
    assert format_ratio(None) == "n/a" and format_ratio(0.454) == "0.45x" and format_ratio(12.4) == "12x"
    (alone,) = budget_verdicts(aggregate(cells({("qr", "1/4"): [0.7], ("hashing", "1/4"): [0.6]})))
    assert alone.unified is None and alone.over_unified is None and alone.train_ratio(alone.winner) is None
    assert "unified did not run at this budget: no time comparison." in alone.summary()
    (only,) = budget_verdicts(aggregate(cells({("unified", "1/4"): [0.7]})))
    assert only.over_runner_up is None and "(the only method at this budget)" in only.summary()
    assert "unified is the time reference." in only.summary()


def test_verdict_markdown(verdicts):
    text = markdown_verdicts(list(verdicts.values()))
    assert "| 1/16 | qr | 0.7400 ± 0.0100 | +0.0300 vs unified (beyond noise) |" in text
    assert "| 1/4 | unified-int8 | 0.7638 ± 0.0049 | +0.0038 vs unified (within noise) |" in text
    assert "| 3 | robe | 0.7400 | -0.0238 | 4.0 kB | 10.0 | 1.0x | n/a | n/a |" in text
    assert "| ref. | collisionless | 0.8100 ± 0.0100 | +0.0700 |" in text
    assert text.count("#### d / m at") == 2


def test_frontier_check_takes_the_best_unified_variant():
    rows = aggregate(cells({**ZOO, ("unified-auto", "1/4"): [0.82, 0.815, 0.83]}))
    quarter, sixteenth = frontier_checks(rows)
    # the best outside the family: robe (unified and unified-int8 are of it)
    assert (quarter.unified.method, quarter.other.method) == ("unified-auto", "robe")
    assert sixteenth.other.method == "qr"
    assert quarter.on_or_above and quarter.over_other.noise is Noise.UNKNOWN  # robe ran one seed
    assert quarter.reaches_reference and quarter.over_reference.value == pytest.approx(0.0117, abs=1e-4)
    assert sixteenth.unified.method == "unified"  # mde-unified is not of the family
    assert not sixteenth.on_or_above and not sixteenth.reaches_reference
    text = markdown_frontier([quarter, sixteenth])
    assert (
        "| d | m | 1/16 | unified | 0.7100 ± 0.0100 | qr | 0.7400 ± 0.0100 | -0.0300 | below | -0.1000 | no |"
        in text
    )
    assert (
        "- d / m: the best unified* variant is on or above the best other method at 1/2 budgets "
        "(below at 1/16: qr by 0.0300); reaches collisionless at 1/4."
    ) in text


def test_frontier_on_within_noise_and_without_others():
    rows = aggregate(
        cells({("unified", "1/4"): [0.700, 0.710, 0.720], ("robe", "1/4"): [0.712, 0.715, 0.718]})
    )
    (check,) = frontier_checks(rows)
    assert check.over_other.value == pytest.approx(-0.005) and check.on_or_above  # a deficit within noise
    assert check.reference is None and check.reaches_reference is None
    assert "| -0.0050 | on (within noise) | — | — |" in markdown_frontier([check])
    (alone,) = frontier_checks(aggregate(cells({("unified-int8", "1/4"): [0.7]})))
    assert alone.other is None and alone.on_or_above is None
    assert frontier_checks(aggregate(cells({("qr", "1/4"): [0.7]}))) == []


def test_report_has_both_sections(tmp_path):
    (tmp_path / "cells").mkdir()
    for i, record in enumerate(cells(ZOO)):
        result = {
            "dataset": "d",
            "model": "m",
            "embedding": record.embedding,
            "seed": record.seed,
            "test_auc": record.test_auc,
            "embedding_params": record.embedding_params,
            "embedding_bytes": record.embedding_bytes,
            "train_seconds": 10.0,
            "bench": {
                "dataset": "d",
                "model": "m",
                "method": record.method,
                "budget": record.budget,
                "seed": record.seed,
            },
        }  # an old cell: no inference field
        (tmp_path / "cells" / f"{i}.json").write_text(json.dumps(result))
    text = write_report(tmp_path, plots=False).markdown.read_text()
    assert (
        text.index("## Claim check") < text.index("## Verdict per budget") < text.index("## Frontier check")
    )
    assert "It takes 1.0x unified's train s." in text  # no inference clause without timings
