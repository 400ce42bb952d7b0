from __future__ import annotations

import pytest

from featmux.embeddings.budget import Budget, split_rows
from featmux.embeddings.registry import BudgetTarget, BudgetUnit


def test_parse_forms():
    assert Budget.parse("1/16") == Budget(fraction=1 / 16)
    assert Budget.parse("0.25") == Budget(fraction=0.25)
    assert Budget.parse("rows:1000") == Budget(rows=1000)
    assert Budget.parse("params:1_600") == Budget(params=1600)
    assert Budget.parse("bytes:4_000") == Budget(bytes=4000)
    assert str(Budget.parse("bytes:4000")) == "bytes:4000"
    assert str(Budget.parse("1/16")) == "1/16"


@pytest.mark.parametrize("text", ["-1", "0", "abc", "rows:-5", "1/0", "params:x", "bytes:0", "bytes:-4"])
def test_parse_rejects_with_guidance(text):
    with pytest.raises(ValueError, match="budget"):
        Budget.parse(text)


def test_targets_fractions_are_bytes_of_the_fp32_collisionless_table():
    # a fraction of the fp32 collisionless table: 1000 parameters = 4000 bytes
    assert Budget(fraction=0.25).target(1000, 10) == BudgetTarget(1000, BudgetUnit.BYTES)
    assert Budget(bytes=123).target(None, 10) == BudgetTarget(123, BudgetUnit.BYTES)
    # rows and params stay parameter budgets
    assert Budget(rows=7).target(None, 10) == BudgetTarget(70, BudgetUnit.PARAMS)
    assert Budget(params=33).target(None, 10) == BudgetTarget(33, BudgetUnit.PARAMS)
    with pytest.raises(ValueError, match="vocabulary"):
        Budget(fraction=0.5).target(None, 10)
    assert BudgetTarget(1001, BudgetUnit.BYTES).per_value(4) == 250
    assert BudgetTarget(1001, BudgetUnit.PARAMS).per_value(4) == 1001


def test_split_rows_proportional_capped_and_exact():
    # proportional: 1000:300:100 of 140 rows
    assert split_rows(140, [1000, 300, 100]) == [100, 30, 10]
    # a tiny feature still gets one row; at or above the total cardinality every feature gets its cap
    alloc = split_rows(1000, [10_000, 4, 2_000])
    assert alloc == [833, 1, 166]
    assert split_rows(20_000, [10_000, 4, 2_000]) == [10_000, 4, 2_000]
    # never above caps, exactly the budget, at least one row each
    for total in (3, 50, 999, 5000, 12_004):
        a = split_rows(total, [10_000, 4, 2_000])
        assert all(1 <= x <= c for x, c in zip(a, [10_000, 4, 2_000], strict=True))
        assert sum(a) == min(max(total, 3), 12_004)


def test_split_rows_by_weights_fills_capped_features_first():
    assert split_rows(20, [100, 4, 4], weights=[10, 2, 2]) == [14, 3, 3]  # 14.3, 2.9, 2.9: none capped
    # equal weights would give 10 each: the two small features take their caps, the rest goes to the first
    assert split_rows(30, [100, 4, 4], weights=[1, 1, 1]) == [22, 4, 4]
    for total in (3, 50, 999, 5000, 12_003):
        a = split_rows(total, [10_000, 4, 2_000], weights=[100, 2, 44.7])
        assert all(1 <= x <= c for x, c in zip(a, [10_000, 4, 2_000], strict=True))
        assert sum(a) == min(max(total, 3), 12_004)
    with pytest.raises(ValueError, match="weights must be > 0"):
        split_rows(20, [100, 4, 4], weights=[1, 0, 1])
