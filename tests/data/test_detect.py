"""Dataset detection from a path, and a table's columns inferred with polars."""

from __future__ import annotations

import polars as pl
import pytest

from featmux.data.detect import detect_source, infer_table_options


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
