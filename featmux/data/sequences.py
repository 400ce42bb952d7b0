"""Behaviour sequences for sequence models (DIN): each rating's history of the user's earlier ratings.

The history of a rating (user u, time t) is the movies u rated at a time strictly before t, the most
recent `max_length` of them, oldest first, each with its genres. Ratings in the same second are not in
each other's history: the file order of a tie says nothing about which came first, so a rating never
sees itself, a tie or anything later. What counts as behaviour (`Behaviour`):
- `rated` (default): every rating of the file (rating 3, which is no CTR row, and ratings of every
  split): a history says what was rated, never how.
- `liked`: the ratings 4-5 of the training split only, DIN's clicks (a CTR positive here is a rating
  of 4-5). The history then carries labels, so only training labels may enter it: no validation or
  test label reaches any row's input, whichever split that row is in.

Two aligned multivalent features are added to the schema:
- `hist_item_id` (int): the movies. By default it shares `item_id`'s embedding rows
  (`CategoricalFeature.share_with`): a movie reads the same rows as history and as target, in the
  collisionless table (item_id's vocabulary), per-feature hashing (its block and salt) and Unified
  Embedding (its salts); `share_embedding=false` gives it rows of its own.
- `hist_genres` (string): one value per history movie, its genre set joined by `|` (e.g.
  `Animation|Comedy`; `(none)` without genres), so each position carries its movie's genres. It keeps
  rows of its own: a genre set is not a value of `genres` (single genres, pooled per row), so it has
  none of `genres`'s rows to share (that would need a bag per position).

Example:
    >>> source = open_source("movielens", "shared/data/movielens-1m", ratings="cs100_half/ratings.dat",
    ...                      history=50)
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import numpy as np
import polars as pl
import pyarrow as pa

from featmux.data.errors import BadRowPolicy, BadRows
from featmux.data.readers._convert import to_int
from featmux.data.readers.movielens import MovieLensFiles, ratings_format
from featmux.data.text import TextChunk, iter_text
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LIKED_RATING = 4  # ratings 4-5 are the CTR positives (featmux.data.readers.movielens)


class Behaviour(StrEnum):
    """Which earlier ratings make up a history."""

    RATED = "rated"
    LIKED = "liked"


HISTORY_ITEMS = "hist_item_id"
HISTORY_GENRES = "hist_genres"
NO_GENRES = "(none)"


def history_schema(base: Schema, share_embedding: bool = True, target: str = "item_id") -> Schema:
    """`base` plus the two history features.

    Args:
        base: the rating rows' schema (it has `target`).
        share_embedding: the history movies read the rows of `target` (`share_with`).
        target: the feature of the rated movie.
    """
    share = target if share_embedding else None
    items = CategoricalFeature(HISTORY_ITEMS, ValueEncoding.INT, multivalent=True, share_with=share)
    # the genre-set tokens contain "|"; a separator only splits text cells, and this column is built as lists
    genres = CategoricalFeature(HISTORY_GENRES, ValueEncoding.STRING, multivalent=True, separator="\t")
    return Schema(base.label, (*base.categorical, items, genres), base.numeric)


def history_windows(
    users: np.ndarray,
    times: np.ndarray,
    behaviour_users: np.ndarray,
    behaviour_times: np.ndarray,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each event's history lies among the behaviours, vectorized (two binary searches).

    Args:
        users: int64 [n] user of each event.
        times: int64 [n] its timestamp.
        behaviour_users: int64 [m] user of each behaviour, the behaviours sorted by (user, time, any
            tie-breaking key).
        behaviour_times: int64 [m] their timestamps.
        max_length: cap on the history length (the most recent behaviours are kept).

    Returns:
        (starts, lengths): the history of event i is behaviours [starts[i], starts[i] + lengths[i]),
        all of its user and all strictly earlier (a behaviour in the same second is not earlier).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    # (user, time) pairs as one sortable int64: dense ranks of both, so any id or timestamp range fits
    _, user_rank = np.unique(np.concatenate([users, behaviour_users]), return_inverse=True)
    time_values, time_rank = np.unique(np.concatenate([times, behaviour_times]), return_inverse=True)
    key = user_rank.astype(np.int64) * np.int64(time_values.size) + time_rank
    n = users.size
    event_key, behaviour_key = key[:n], key[n:]
    ends = np.searchsorted(behaviour_key, event_key, side="left")  # first behaviour not strictly earlier
    user_starts = np.searchsorted(behaviour_key, user_rank[:n].astype(np.int64) * time_values.size, "left")
    starts = np.maximum(ends - max_length, user_starts)
    return starts, ends - starts


def build_history(
    events: pl.DataFrame, items: pl.DataFrame, max_length: int, behaviour: np.ndarray | None = None
) -> pl.DataFrame:
    """The history features of every event.

    Args:
        events: columns `key` (unique int64, e.g. the line number), `user_id`, `item_id`, `timestamp`.
        items: the movie table, `item_id` and `genres` (List(String)); events of other movies are no
            behaviour (they have no genres to show) and get no history.
        max_length: cap on the history length.
        behaviour: bool [events.height], which events count as behaviour (default: all of them).

    Returns:
        One row per event of a known movie: `key`, `hist_item_id` (List(Int64)), `hist_genres`
        (List(String)), aligned position by position.
    """
    tokens = items.select(
        "item_id",
        pl.when(pl.col("genres").list.len() > 0)
        .then(pl.col("genres").list.join("|"))
        .otherwise(pl.lit(NO_GENRES))
        .alias("token"),
    )
    mask = np.ones(events.height, dtype=bool) if behaviour is None else np.asarray(behaviour, dtype=bool)
    if mask.shape != (events.height,):
        raise ValueError(f"behaviour has shape {mask.shape}, expected ({events.height},): one flag per event")
    known = events.with_columns(pl.Series("_behaviour", mask)).join(tokens, on="item_id", how="inner")
    users = known.get_column("user_id").to_numpy().astype(np.int64)
    times = known.get_column("timestamp").to_numpy().astype(np.int64)
    keys = known.get_column("key").to_numpy().astype(np.int64)
    behaviours = np.flatnonzero(known.get_column("_behaviour").to_numpy())
    behaviours = behaviours[np.lexsort((keys[behaviours], times[behaviours], users[behaviours]))]
    starts, lengths = history_windows(users, times, users[behaviours], times[behaviours], max_length)
    offsets = np.zeros(keys.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # positions of every history value among the sorted behaviours: each window's start + 0..length-1
    positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    source = behaviours[positions]  # rows of `known`
    item_values = known.get_column("item_id").to_numpy().astype(np.int64)[source]
    token_values = known.get_column("token").gather(source).to_arrow()
    arrow_offsets = pa.array(offsets)
    return pl.DataFrame(
        {
            "key": keys,
            HISTORY_ITEMS: pl.from_arrow(pa.LargeListArray.from_arrays(arrow_offsets, pa.array(item_values))),
            HISTORY_GENRES: pl.from_arrow(pa.LargeListArray.from_arrays(arrow_offsets, token_values)),
        }
    )


def rating_events(files: MovieLensFiles) -> pl.DataFrame:
    """Every parsable rating of the ratings file: `key` (its line number), user_id, item_id, rating,
    timestamp.

    Malformed lines are left out here (the row reader reports them with their line and field).
    """
    parts = []
    ignored = BadRows(BadRowPolicy.SKIP)
    for chunk in iter_text(files.ratings, ratings_format(files.ratings), bad_rows=ignored):
        columns, good = {"key": pl.Series(chunk.lines.astype(np.int64))}, np.ones(len(chunk.lines), bool)
        for name in ("user_id", "item_id", "rating", "timestamp"):
            values, check = to_int(chunk.frame.get_column(name), name)
            columns[name] = values
            good &= ~check.bad & values.is_not_null().to_numpy()
        parts.append(pl.DataFrame(columns).filter(pl.Series(good)))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"key": pl.Int64})


def behaviour_mask(events: pl.DataFrame, behaviour: Behaviour, readable: np.ndarray) -> np.ndarray | None:
    """Which events count as behaviour (None: all of them).

    Args:
        events: `rating_events` of the ratings file.
        behaviour: what a history is made of.
        readable: bool [events.height], the events whose labels a history may read (the training
            split's when splits are carved by rating; all when by user).
    """
    if behaviour is Behaviour.RATED:
        return None
    return (events.get_column("rating").to_numpy() >= LIKED_RATING) & readable


def with_history(
    chunks: Iterator[TextChunk], history: pl.DataFrame, columns: list[str]
) -> Iterator[TextChunk]:
    """Rating chunks with their history features joined by line number (empty where there is none).

    Args:
        chunks: rating rows with their line numbers (`movielens_chunks`).
        history: `build_history` of the same file's events, keyed by line number.
        columns: the output columns, in schema order.
    """
    for chunk in chunks:
        frame = chunk.frame.with_columns(pl.Series("_key", chunk.lines.astype(np.int64)))
        frame = frame.join(history, left_on="_key", right_on="key", how="left", maintain_order="left")
        frame = frame.with_columns(
            pl.col(HISTORY_ITEMS).fill_null(pl.lit([], dtype=pl.List(pl.Int64))),
            pl.col(HISTORY_GENRES).fill_null(pl.lit([], dtype=pl.List(pl.String))),
        )
        yield TextChunk(frame.select(columns), chunk.lines)
