"""Behaviour histories for DIN: strictly earlier ratings of the same user, capped, ties excluded."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from featmux.data.encoded import encode_frame
from featmux.data.sequences import HISTORY_GENRES, HISTORY_ITEMS, build_history
from featmux.data.sources import open_source


def write_movielens(folder, ratings: list[str]) -> None:
    folder.mkdir()
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    movies = "10::A (2000)::Drama\n20::B (2000)::Comedy|Sci-Fi\n30::C (2000)::\n40::D (2000)::Drama\n"
    (folder / "movies.dat").write_text(movies + "50::E (2000)::Horror\n")
    (folder / "ratings.dat").write_text("".join(r + "\n" for r in ratings))


def test_history_is_strictly_earlier_ratings_of_the_user_ties_left_out_capped(tmp_path):
    ratings = [
        "1::50::5::40",  # line 1: E at t=40
        "1::20::4::20",  # line 2: B at t=20
        "1::10::5::10",  # line 3: A at t=10
        "2::10::1::5",  # line 4: another user's rating: never in user 1's history
        "1::30::2::20",  # line 5: C at t=20, a tie with B
        "1::40::3::30",  # line 6: D at t=30, rating 3: no CTR row, but it is behaviour
    ]
    write_movielens(tmp_path / "ml", ratings)
    source = open_source("movielens", tmp_path / "ml", history=2, fractions=[1.0, 0.0, 0.0])
    frame = pl.concat(list(source.split("train")))
    user1 = frame.filter(pl.col("user_id") == 1)
    got = dict(zip(user1["item_id"].to_list(), user1[HISTORY_ITEMS].to_list(), strict=True))
    assert got == {
        10: [],  # the first rating
        20: [10],  # B sees A, not its tie C
        30: [10],  # C sees A, not its tie B
        50: [30, 40],  # E: the last 2 of A, B, C, D (ties in line order), oldest first
    }
    genres = dict(zip(user1["item_id"].to_list(), user1[HISTORY_GENRES].to_list(), strict=True))
    assert genres[50] == ["(none)", "Drama"] and genres[20] == ["Drama"]
    assert frame.filter(pl.col("user_id") == 2)[HISTORY_ITEMS].to_list() == [[]]
    encoded = encode_frame(frame, source.schema)  # history values and genre sets stay aligned
    items_bag, genres_bag = encoded.bags[-2], encoded.bags[-1]
    np.testing.assert_array_equal(items_bag.offsets, genres_bag.offsets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_history_value_is_a_tie_or_from_the_future(seed):
    """Leakage check against a brute-force reading of the definition, on random events with many ties."""
    rng = np.random.default_rng(seed)
    n, max_length = 600, 4
    events = pl.DataFrame(
        {
            "key": rng.permutation(n).astype(np.int64) + 1,
            "user_id": rng.integers(0, 12, n),
            "item_id": rng.integers(0, 30, n),
            "timestamp": rng.integers(0, 40, n),  # ~15 events per second per user: ties everywhere
        }
    )
    items = pl.DataFrame({"item_id": np.arange(30), "genres": [["g"]] * 30})
    behaviour = rng.random(n) < 0.6 if seed else None  # seeds 1, 2: only some events are behaviour
    history = build_history(events, items, max_length, behaviour)
    assert history.height == n and sorted(history["key"].to_list()) == sorted(events["key"].to_list())
    by_key = dict(zip(history["key"].to_list(), history[HISTORY_ITEMS].to_list(), strict=True))
    rows = events.with_columns(pl.Series("b", np.ones(n, bool) if behaviour is None else behaviour)).rows(
        named=True
    )
    for e in rows:
        earlier = sorted(
            (r for r in rows if r["user_id"] == e["user_id"] and r["timestamp"] < e["timestamp"] and r["b"]),
            key=lambda r: (r["timestamp"], r["key"]),
        )
        assert by_key[e["key"]] == [r["item_id"] for r in earlier][-max_length:]


def test_history_options_are_checked(tmp_path):
    write_movielens(tmp_path / "ml", ["1::10::5::10"])
    with pytest.raises(ValueError, match="must be >= 0"):
        open_source("movielens", tmp_path / "ml", history=-1)
    schema = open_source("movielens", tmp_path / "ml", history=3).schema
    assert schema.feature(HISTORY_ITEMS).multivalent and schema.feature(HISTORY_GENRES).multivalent
    # the history movies share item_id's rows by default; the genre sets keep their own
    assert schema.feature(HISTORY_ITEMS).share_with == "item_id"
    assert schema.feature(HISTORY_GENRES).share_with is None
    own = open_source("movielens", tmp_path / "ml", history=3, share_embedding=False).schema
    assert own.feature(HISTORY_ITEMS).share_with is None
    with pytest.raises(ValueError, match="share_embedding needs a history"):
        open_source("movielens", tmp_path / "ml", share_embedding=True)
    with pytest.raises(ValueError, match="true or false"):
        open_source("movielens", tmp_path / "ml", history=3, share_embedding="yes")


def random_ratings(folder, n: int = 400) -> None:
    rng = np.random.default_rng(0)
    users, items, times = rng.integers(1, 3, n), rng.choice([10, 20, 30, 40, 50], n), rng.integers(0, 100, n)
    ratings = rng.choice([1, 2, 4, 5], n)
    write_movielens(
        folder, [f"{u}::{i}::{r}::{t}" for u, i, r, t in zip(users, items, ratings, times, strict=True)]
    )


def test_din_trains_end_to_end_on_histories(tmp_path):
    from featmux.training.experiment import ExperimentConfig, run_experiment

    n = 400
    random_ratings(tmp_path / "ml", n)
    config = ExperimentConfig(
        dataset="movielens",
        data=tmp_path / "ml",
        dataset_options={"history": 5},
        model="din",
        model_options={"attention_hidden": [4], "hidden": [8]},
        embedding="unified",
        budget="1/2",
        optimizer="row_adam",  # the history's unpooled lookups are rows the row optimizer updates too
        embedding_dim=4,
        batch_size=64,
        epochs=1,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    result = run_experiment(config)
    assert 0.0 <= result["test_auc"] <= 1.0 and result["steps"] > 0
    assert result["rows"]["train"] + result["rows"]["valid"] + result["rows"]["test"] == n


def test_without_a_history_the_source_options_are_unchanged(tmp_path):
    write_movielens(tmp_path / "ml", ["1::10::5::10"])
    plain = open_source("movielens", tmp_path / "ml").options
    assert "history" not in plain  # cache keys of old runs still hold
    assert open_source("movielens", tmp_path / "ml", history=3).options["history"] == 3


@pytest.mark.parametrize("embedding", ["collisionless", "hashing"])
def test_din_trains_from_the_cli_with_history_movies_on_item_rows(tmp_path, monkeypatch, embedding):
    from typer.testing import CliRunner

    from featmux.cli.main import app

    random_ratings(tmp_path / "ml")
    monkeypatch.setenv("FEATMUX_CACHE", str(tmp_path / "cache"))

    def train(share: str) -> dict:
        out = tmp_path / f"{embedding}_{share}.json"
        args = ["train", "--dataset", "movielens", "--data", str(tmp_path / "ml"), "--model", "din"]
        args += ["--dataset-option", "history=5", "--dataset-option", f"share_embedding={share}"]
        args += ["--model-option", "attention_hidden=[4]", "--model-option", "hidden=[8]"]
        args += ["--embedding", embedding, *(["--budget", "1/2"] if embedding == "hashing" else [])]
        args += [
            "--epochs",
            "1",
            "--threads",
            "1",
            "--no-progress",
            "--embedding-dim",
            "4",
            "--batch-size",
            "64",
        ]
        result = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    shared, own = train("true"), train("false")
    assert 0.0 <= shared["test_auc"] <= 1.0 and shared["steps"] > 0
    if embedding == "collisionless":  # rows of its own: the history's 5 movies and an OOV row, D = 4
        assert own["embedding_params"] - shared["embedding_params"] == (5 + 1) * 4
    else:  # half of a collisionless size that counts item_id's rows once
        assert shared["embedding_params"] < own["embedding_params"]


def test_liked_history_holds_only_earlier_training_ratings_of_4_or_5(tmp_path):
    """behaviour=liked, against a brute-force reading: every history value is an earlier rating 4-5 of
    the training split, so no validation or test label reaches any row's input."""
    from featmux.data.sources import split_assignment

    rng = np.random.default_rng(3)
    movies = [10, 20, 30, 40, 50]
    rows = [  # (user, item, rating, time): each user rates each movie once, so (user, item) names a line
        (u, m, int(rng.choice([1, 2, 3, 4, 5])), int(t))
        for u in (1, 2)
        for m, t in zip(movies, rng.permutation(len(movies)), strict=True)
    ]
    write_movielens(tmp_path / "ml", [f"{u}::{m}::{r}::{t}" for u, m, r, t in rows])
    train = split_assignment(np.arange(1, len(rows) + 1), 0, (0.8, 0.1, 0.1)) == 0
    assert 0 < train.sum() < len(rows)  # both kinds of rows are in the file
    source = open_source("movielens", tmp_path / "ml", history=50, behaviour="liked")
    got = {}
    for split in ("train", "valid", "test"):
        frame = pl.concat(list(source.split(split)))
        columns = (frame[c].to_list() for c in ("user_id", "item_id", HISTORY_ITEMS))
        got |= {(u, m): h for u, m, h in zip(*columns, strict=True)}
    expected = {
        (u, m): [
            m2
            for u2, m2, r2, t2 in sorted(rows, key=lambda row: row[3])
            if u2 == u and t2 < t and r2 >= 4 and train[rows.index((u2, m2, r2, t2))]
        ]
        for u, m, r, t in rows
        if r != 3  # rating 3 is no CTR row
    }
    assert got == expected
    assert any(expected.values())  # the check is not vacuous
    rated = open_source("movielens", tmp_path / "ml", history=50)
    assert "behaviour" not in rated.options and source.options["behaviour"] == "liked"  # cache keys differ


def test_history_behaviour_option_is_checked(tmp_path):
    write_movielens(tmp_path / "ml", ["1::10::5::10"])
    with pytest.raises(ValueError, match="behaviour must be one of rated, liked"):
        open_source("movielens", tmp_path / "ml", history=3, behaviour="clicked")
    with pytest.raises(ValueError, match="behaviour needs a history"):
        open_source("movielens", tmp_path / "ml", behaviour="liked")


def test_user_split_puts_every_user_in_one_split_and_keeps_their_history(tmp_path):
    """split_by=user (the DIN paper's MovieLens protocol): valid/test users never appear in training,
    and a test user's history still holds their own earlier ratings."""
    from featmux.data.sources import split_assignment

    rng = np.random.default_rng(5)
    users = np.arange(1, 41)
    lines = [
        f"{u}::{m}::{int(rng.choice([1, 2, 4, 5]))}::{t}" for u in users for t, m in enumerate((10, 20, 30))
    ]
    write_movielens(tmp_path / "ml", lines)
    (tmp_path / "ml" / "users.dat").write_text("".join(f"{u}::F::1::10::48067\n" for u in users))
    source = open_source("movielens", tmp_path / "ml", history=5, split_by="user")
    frames = {s: pl.concat(list(source.split(s))) for s in ("train", "valid", "test")}
    expected = split_assignment(users, 0, (0.8, 0.1, 0.1))
    for index, name in enumerate(("train", "valid", "test")):
        got = set(frames[name]["user_id"].to_list())
        assert got == set(users[expected == index].tolist()) and got  # every split holds some users
    assert sum(f.height for f in frames.values()) == len(lines)
    test = frames["test"].sort("item_id")
    for user, items, history in zip(
        *(test[c].to_list() for c in ("user_id", "item_id", HISTORY_ITEMS)), strict=True
    ):
        assert history == [m for m in (10, 20, 30) if m < items], user  # ratings at t = 0, 1, 2 in item order
    assert "users carved by split seed 0" in source.origins["test"]
    assert source.options["split_by"] == "user"
    assert "split_by" not in open_source("movielens", tmp_path / "ml").options  # old cache keys hold
    with pytest.raises(ValueError, match="split_by must be one of rating, user"):
        open_source("movielens", tmp_path / "ml", split_by="item")


def test_drop_features_leaves_a_feature_out_of_the_schema_and_the_cache_key(tmp_path):
    write_movielens(tmp_path / "ml", ["1::10::5::10", "2::20::1::20"])
    full = open_source("movielens", tmp_path / "ml", history=3)
    cold = open_source("movielens", tmp_path / "ml", history=3, drop_features=["user_id"])
    assert cold.schema.feature_names == tuple(n for n in full.schema.feature_names if n != "user_id")
    assert cold.options["drop_features"] == ["user_id"] and "drop_features" not in full.options
    encoded = encode_frame(pl.concat(list(cold.split("train"))), cold.schema)
    assert encoded.ids.shape[1] == len(cold.schema.univalent)
    with pytest.raises(ValueError, match=r"drop_features names \['user'\], not categorical features"):
        open_source("movielens", tmp_path / "ml", drop_features=["user"])
    for bad in ("user_id", 5, []):
        with pytest.raises(ValueError, match="drop_features must be a non-empty list"):
            open_source("movielens", tmp_path / "ml", drop_features=bad)


def test_a_liked_history_under_the_user_split_reads_only_its_users_earlier_4_and_5(tmp_path):
    """By user, a liked history holds the user's own earlier ratings 4-5: labels of the row's own
    split only (a user's ratings are all in one split), never of another user or a later time."""
    from featmux.data.sources import split_assignment

    rng = np.random.default_rng(7)
    users = np.arange(1, 31)
    rows = [
        (int(u), m, int(rng.choice([1, 2, 4, 5])), t) for u in users for t, m in enumerate((10, 20, 30, 40))
    ]
    write_movielens(tmp_path / "ml", [f"{u}::{m}::{r}::{t}" for u, m, r, t in rows])
    (tmp_path / "ml" / "users.dat").write_text("".join(f"{u}::F::1::10::48067\n" for u in users))
    source = open_source("movielens", tmp_path / "ml", history=10, split_by="user", behaviour="liked")
    split_of = dict(zip(users.tolist(), split_assignment(users, 0, (0.8, 0.1, 0.1)).tolist(), strict=True))
    got = {}
    for index, name in enumerate(("train", "valid", "test")):
        frame = pl.concat(list(source.split(name)))
        assert {split_of[u] for u in frame["user_id"].to_list()} == {index}
        columns = (frame[c].to_list() for c in ("user_id", "item_id", HISTORY_ITEMS))
        got |= {(u, m): h for u, m, h in zip(*columns, strict=True)}
    expected = {
        (u, m): [m2 for u2, m2, r2, t2 in rows if u2 == u and t2 < t and r2 >= 4] for u, m, _, t in rows
    }
    assert got == expected
    assert any(h for (u, _), h in expected.items() if split_of[u] == 2)  # test users have histories
