"""Dataset detection from a path, and a table's columns inferred with polars."""

from __future__ import annotations

import polars as pl
import pytest

from featmux.data.detect import bag_separator, detect_source, infer_table_options
from featmux.data.inspect import FeatureKind, inspect_source
from featmux.data.sources import open_source


def test_layouts_are_detected(tmp_path):
    frappe = tmp_path / "frappe"
    frappe.mkdir()
    (frappe / "frappe.train.libfm").write_text("1 0:1 1:1\n")
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "users.dat").write_text("1::F::1::10::48067\n")
    (ml / "movies.dat").write_text("1::X (1995)::Drama\n")
    (ml / "ratings.dat").write_text("1::1::5::1\n")
    avazu = tmp_path / "avazu"
    avazu.mkdir()
    (avazu / "train.csv").write_text("id,click,hour,C1\n1,0,14102100,1005\n")
    criteo = tmp_path / "criteo.txt"
    criteo.write_text("\t".join(["1"] * 40) + "\n")
    table = tmp_path / "clicks.csv"
    table.write_text("click,user\n1,3\n")
    found = {p.name: detect_source(p) for p in (frappe, ml, ml / "ratings.dat", avazu, criteo, table)}
    assert found == {
        "frappe": "frappe",
        "ml": "movielens",
        "ratings.dat": "movielens",
        "avazu": "avazu",
        "criteo.txt": "criteo",
        "clicks.csv": "csv",
    }
    with pytest.raises(ValueError, match="give --dataset"):
        detect_source(tmp_path)


def test_table_columns_are_inferred(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user,site,price,clicked\n1,a,1.5,0\n2,b,,1\n3,a,2.0,1\n")
    assert infer_table_options(path) == {
        "label": "clicked",
        "categorical": ["user", "site"],
        "numeric": ["price"],
        "multivalent": [],
        "encodings": {"user": "int"},
    }
    parquet = tmp_path / "t.parquet"
    pl.DataFrame({"y": [True, False], "tags": [[1, 2], [3]], "ad": ["x", "y"]}).write_parquet(parquet)
    inferred = infer_table_options(parquet)
    assert (inferred["label"], inferred["multivalent"], inferred["categorical"]) == ("y", ["tags"], ["ad"])
    none = tmp_path / "none.csv"
    none.write_text("a,b\n3,x\n")
    with pytest.raises(ValueError, match="label=NAME"):
        infer_table_options(none)


def test_multivalent_text_columns_are_inferred_with_their_separator(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(
        "click,user,genres,history,title,tags\n"
        "1,3,Comedy|Drama,11|12,Hello; world,a;b\n"
        "0,4,Drama,12,Good movie,b\n"
        "1,5,Action|Comedy,11|13,Bad; film,a\n"
        "0,6,Drama|Action,,So so,b;c\n"
    )
    inferred = infer_table_options(path)
    # genres and history join values with "|"; tags uses ";" and stays categorical (one separator for
    # all bags, the most used); title's ";" splits free text into new words, not repeated items
    assert inferred == {
        "label": "click",
        "categorical": ["user", "title", "tags"],
        "numeric": [],
        "multivalent": ["genres", "history"],
        "encodings": {"user": "int", "history": "int"},
        "multivalent_separator": "|",
    }
    source = open_source("csv", path, fractions=(1.0, 0.0, 0.0), **inferred)
    summaries = {s.name: s for s in inspect_source(source, top=3)}
    genres = summaries["genres"]
    assert (genres.kind, genres.distinct, genres.top[0]) == (FeatureKind.MULTIVALENT, 3, ("Drama", 3))
    assert set(genres.top[1:]) == {("Comedy", 2), ("Action", 2)}
    assert (summaries["history"].missing, summaries["history"].distinct) == (1, 3)
    semicolons = tmp_path / "tags.csv"
    semicolons.write_text("y,tags\n1,a;b\n0,b\n1,c;a\n")
    assert infer_table_options(semicolons)["multivalent_separator"] == ";"


def test_bag_separator_refuses_what_is_not_a_bag():
    assert bag_separator(pl.Series(["a|b", "b", "a|c"])) == "|"
    assert bag_separator(pl.Series(["a|b", "c;d"])) is None  # two separators: ambiguous
    assert bag_separator(pl.Series(["x"] * 99 + ["a|b"])) is None  # 1% of the cells: an odd value
    assert bag_separator(pl.Series(["1,5", "2,25"]), field_separator=";") is None  # decimal commas
    assert bag_separator(pl.Series(["a,b", "b"]), field_separator=",") is None  # the field separator
    assert bag_separator(pl.Series(["a,b", "b"]), field_separator=None) == ","  # Parquet: no field separator
    assert bag_separator(pl.Series([1, 2])) is None
