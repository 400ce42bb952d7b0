"""Streamed per-feature statistics agree with a direct computation on the whole split."""

from __future__ import annotations

import polars as pl
import pytest

from featmux.data.inspect import FeatureKind, format_summaries, inspect_source
from featmux.data.sources import open_source


def test_statistics_match_whole_split_and_do_not_depend_on_chunks(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("y,ad,tags,price\n1,a,x|y,1.5\n0,b,,\n1,a,x,3.0\n0,,y|y,-2\n0,a,z,nan\n")
    options = {"label": "y", "categorical": ["ad"], "numeric": ["price"], "multivalent": ["tags"]}
    source = open_source("csv", path, fractions=(1.0, 0.0, 0.0), **options)
    summaries = {s.name: s for s in inspect_source(source, top=2)}
    assert list(summaries) == ["y", "ad", "tags", "price"]
    label, ad, tags, price = summaries.values()
    assert (label.kind, label.rows, label.mean, label.distinct) == (FeatureKind.LABEL, 5, 0.4, 2)
    assert (ad.missing, ad.distinct, ad.top) == (1, 2, (("a", 3), ("b", 1)))
    assert (tags.kind, tags.missing, tags.distinct, tags.top) == (
        FeatureKind.MULTIVALENT,
        1,
        3,
        (("y", 3), ("x", 2)),
    )
    assert (price.missing, price.minimum, price.maximum, price.mean) == (2, -2.0, 3.0, pytest.approx(2.5 / 3))
    chunked = open_source("csv", path, fractions=(1.0, 0.0, 0.0), chunk_rows=2, **options)
    assert inspect_source(chunked, top=2) == list(summaries.values())
    assert "price" in format_summaries(list(summaries.values()))


def test_synthetic_cardinalities_and_max_rows():
    source = open_source("synthetic", rows=20_000, cardinalities=[7, 3_000], num_numeric=1, chunk_rows=3_000)
    summaries = inspect_source(source, max_rows=10_000)
    frame = pl.concat(list(source.split("train"))).head(10_000)
    by_name = {s.name: s for s in summaries}
    assert by_name["C1"].rows == 10_000 and by_name["C1"].distinct == 7
    assert by_name["C2"].distinct == frame["C2"].n_unique()
    top_value, top_count = by_name["C2"].top[0]
    assert top_value == 0  # the Zipf head
    assert top_count == frame["C2"].value_counts(sort=True)["count"][0]
    assert by_name["I1"].missing == frame["I1"].null_count()
    assert by_name["I1"].mean == pytest.approx(frame["I1"].mean())
