from __future__ import annotations

import pytest

from featmux.embeddings.budget import Budget, split_rows


def test_parse_forms():
    assert Budget.parse("1/16") == Budget(fraction=1 / 16)
    assert Budget.parse("0.25") == Budget(fraction=0.25)
    assert Budget.parse("rows:1000") == Budget(rows=1000)
    assert Budget.parse("params:1_600") == Budget(params=1600)
    assert str(Budget.parse("1/16")) == "1/16"


@pytest.mark.parametrize("text", ["-1", "0", "abc", "rows:-5", "1/0", "params:x"])
def test_parse_rejects_with_guidance(text):
    with pytest.raises(ValueError, match="budget"):
        Budget.parse(text)


def test_parameters():
    assert Budget(fraction=0.25).parameters(1000, 10) == 250
    assert Budget(rows=7).parameters(None, 10) == 70
    assert Budget(params=33).parameters(None, 10) == 33
    with pytest.raises(ValueError, match="vocabulary"):
        Budget(fraction=0.5).parameters(None, 10)


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
