"""MovieLens 100K / 1M ratings as CTR rows: ratings joined with user and movie features.

Layouts (GroupLens originals):
- 100K: `u.data` (tab: user, item, rating, timestamp), `u.user` (`|`: user|age|gender|occupation|zip),
  `u.item` (`|`, latin-1: id|title|release|video release|url|19 genre flags), `u.genre` (genre names).
- 1M: `ratings.dat` (`::`: user::movie::rating::timestamp), `users.dat` (`::`: user::gender::age::
  occupation::zip), `movies.dat` (`::`, latin-1: id::title::Genre1|Genre2). Any ratings file in the 1M
  format can stand in for `ratings.dat` (e.g. a sample, or `cs100_half/ratings.dat`).

CTR label as in AutoInt and later papers: rating 4-5 -> 1, 1-2 -> 0, rating 3 dropped. The ratings file is
streamed; the user and movie tables are small and loaded whole for the join. A rating whose user or
movie is absent from its table is a bad row (field `user_id` / `item_id`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, unique
from pathlib import Path
from typing import Unpack

import numpy as np
import polars as pl

from featmux.data.errors import BadRows, DataError
from featmux.data.readers._convert import apply, int_conversion, to_int
from featmux.data.text import (
    DEFAULT_CHUNK_ROWS,
    Check,
    ReadOptions,
    TextChunk,
    TextFormat,
    frames,
    iter_text,
    options_bad_rows,
    peek_line,
    rechunk,
    reject_rows,
)
from featmux.features import CategoricalFeature, Schema, ValueEncoding

LABEL = "label"
# u.genre order; used when u.genre is absent
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_USER_COLUMNS = ("user_id", "gender", "age", "occupation", "zip")


@unique
class MovieLensVariant(Enum):
    """Which MovieLens release a directory holds."""

    ML_100K = "100k"
    ML_1M = "1m"


@dataclass(frozen=True)
class MovieLensFiles:
    """The files of one MovieLens dataset.

    Args:
        variant: 100K or 1M (decides the side tables' layouts).
        ratings: the ratings file (its layout, tab or `::`, is read from its first line).
        users: u.user or users.dat.
        items: u.item or movies.dat.
        genres: u.genre (100K only; None: the standard 19 genres).

    Example:
        >>> files = detect_movielens("shared/data/movielens-1m", ratings="cs100_half/ratings.dat")
        >>> files.variant, files.users.name
        (<MovieLensVariant.ML_1M: '1m'>, 'users.dat')
    """

    variant: MovieLensVariant
    ratings: Path
    users: Path
    items: Path
    genres: Path | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file read, for cache keys."""
        return tuple(p for p in (self.ratings, self.users, self.items, self.genres) if p is not None)


def movielens_schema() -> Schema:
    """The MovieLens CTR schema (same for 100K and 1M).

    user_id, item_id and age are integers (1M ages are the codes 1, 18, ..., 56); gender, occupation
    (a name in 100K, a code in 1M) and zip are strings; genres is multivalent (`|`-separated).
    """
    return Schema(
        LABEL,
        (
            CategoricalFeature("user_id", ValueEncoding.INT),
            CategoricalFeature("item_id", ValueEncoding.INT),
            CategoricalFeature("gender"),
            CategoricalFeature("age", ValueEncoding.INT),
            CategoricalFeature("occupation"),
            CategoricalFeature("zip"),
            CategoricalFeature("genres", multivalent=True, separator="|"),
        ),
    )


def _candidates(folder: Path) -> list[str]:
    found = [*folder.glob("*rating*"), *folder.glob("*/*rating*")]
    return sorted(str(p.relative_to(folder)) for p in found if p.is_file())


def detect_movielens(path: str | Path, ratings: str | Path | None = None) -> MovieLensFiles:
    """Find the files of a MovieLens dataset.

    Args:
        path: a directory (100K `ml-100k/` with u.data, u.user, u.item; or 1M `ml-1m/` with ratings.dat,
            users.dat, movies.dat), or a ratings file whose side tables are in its directory or the one above.
        ratings: a ratings file to use instead of u.data / ratings.dat (absolute, or relative to `path`).

    Returns:
        The files, with the variant given by the side tables found.

    Raises:
        FileNotFoundError: naming the expected file that is missing.
    """
    path = Path(path)
    if path.is_file():
        ratings = ratings if ratings is not None else path
        folders = [path.parent, path.parent.parent]
    elif path.is_dir():
        folders = [path]
    else:
        raise FileNotFoundError(f"MovieLens: {path} does not exist")
    if ratings is not None:
        ratings = Path(ratings)
        if not ratings.is_absolute() and not ratings.is_file():
            ratings = folders[0] / ratings
        if not ratings.is_file():
            raise FileNotFoundError(f"MovieLens: ratings file {ratings} does not exist")
    layouts = (
        (MovieLensVariant.ML_100K, ("u.data", "u.user", "u.item")),
        (MovieLensVariant.ML_1M, ("ratings.dat", "users.dat", "movies.dat")),
    )
    for folder in folders:
        for variant, (ratings_name, users_name, items_name) in layouts:
            if not ((folder / users_name).is_file() and (folder / items_name).is_file()):
                continue
            if ratings is None:
                ratings = folder / ratings_name
                if not ratings.is_file():
                    hint = _candidates(folder)
                    found = f"; rating files found there: {hint}, pass one as ratings=..." if hint else ""
                    raise FileNotFoundError(f"MovieLens {variant.value}: expected {ratings}{found}")
            genres = folder / "u.genre" if variant is MovieLensVariant.ML_100K else None
            genres = genres if genres is not None and genres.is_file() else None
            return MovieLensFiles(variant, ratings, folder / users_name, folder / items_name, genres)
    # name the missing side table of the layout the directory seems to hold
    for variant, names in layouts:
        if any((folders[0] / name).is_file() for name in names):
            missing = next(folders[0] / n for n in names[1:] if not (folders[0] / n).is_file())
            raise FileNotFoundError(f"MovieLens {variant.value}: expected {missing}")
    raise FileNotFoundError(
        f"MovieLens: no side tables in {folders[0]}: expected u.user and u.item (100K) or users.dat and "
        "movies.dat (1M)"
    )


def _load(path: Path, fmt: TextFormat, bad_rows: BadRows) -> TextChunk:
    """A whole (small) side table with its line numbers."""
    chunks = list(iter_text(path, fmt, bad_rows=bad_rows))
    if not chunks:
        raise DataError(path, None, None, "no rows")
    return TextChunk(pl.concat([c.frame for c in chunks]), np.concatenate([c.lines for c in chunks]))


def _unique_ids(table: TextChunk, column: str, path: Path, bad_rows: BadRows) -> TextChunk:
    ids, check = to_int(table.frame.get_column(column), column)
    table = TextChunk(table.frame.with_columns(ids), table.lines)
    missing = Check(column, "missing id", table.frame.get_column(column).is_null().to_numpy())
    table = reject_rows(table, [check, missing], path, bad_rows)
    # later rows with an id already seen are the bad ones (the first definition wins)
    repeated = table.frame.get_column(column).is_first_distinct().not_().to_numpy()
    return reject_rows(table, [Check(column, "duplicate id", repeated)], path, bad_rows)


def _genre_names(files: MovieLensFiles, bad_rows: BadRows) -> tuple[str, ...]:
    if files.genres is None:
        return GENRES_100K
    table = _load(files.genres, TextFormat("|", names=("name", "index")), bad_rows).frame
    index, _ = to_int(table.get_column("index"), "index")
    order = np.argsort(index.fill_null(len(table)).to_numpy(), kind="stable")
    return tuple(table.get_column("name").gather(order).to_list())


def load_users(files: MovieLensFiles, bad_rows: BadRows | None = None) -> pl.DataFrame:
    """The user table: user_id (Int64), gender, age (Int64), occupation, zip (String).

    Args:
        files: the dataset's files.
        bad_rows: where malformed rows go (default: raise at the first).

    Returns:
        One row per user.
    """
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    if files.variant is MovieLensVariant.ML_100K:
        fmt = TextFormat("|", encoding="latin-1", names=("user_id", "age", "gender", "occupation", "zip"))
    else:
        fmt = TextFormat("::", encoding="latin-1", names=_USER_COLUMNS)
    table = _unique_ids(_load(files.users, fmt, bad_rows), "user_id", files.users, bad_rows)
    age, check = to_int(table.frame.get_column("age"), "age")
    table = reject_rows(TextChunk(table.frame.with_columns(age), table.lines), [check], files.users, bad_rows)
    return table.frame.select(_USER_COLUMNS)


def load_items(files: MovieLensFiles, bad_rows: BadRows | None = None) -> pl.DataFrame:
    """The movie table: item_id (Int64) and genres (List(String)).

    Args:
        files: the dataset's files.
        bad_rows: where malformed rows go (default: raise at the first).

    Returns:
        One row per movie.
    """
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    if files.variant is MovieLensVariant.ML_1M:
        fmt = TextFormat("::", encoding="latin-1", names=("item_id", "title", "genres"))
        table = _unique_ids(_load(files.items, fmt, bad_rows), "item_id", files.items, bad_rows)
        genres = table.frame.get_column("genres").fill_null("").str.split("|")
    else:
        names = _genre_names(files, bad_rows)
        flags = tuple(f"genre_{i}" for i in range(len(names)))
        columns = ("item_id", "title", "release_date", "video_release_date", "url", *flags)
        fmt = TextFormat("|", encoding="latin-1", names=columns)
        table = _unique_ids(_load(files.items, fmt, bad_rows), "item_id", files.items, bad_rows)
        frame = table.frame
        bad = np.zeros(frame.height, dtype=bool)
        for flag in flags:
            bad |= ~frame.get_column(flag).is_in(["0", "1"]).fill_null(False).to_numpy()
        table = reject_rows(
            table, [Check("genres", "genre flags must be 0 or 1", bad)], files.items, bad_rows
        )
        # flag columns -> the names of the genres set, in u.genre order
        genres = table.frame.select(
            pl.concat_list(
                [
                    pl.when(pl.col(f) == "1").then(pl.lit(n)).otherwise(None)
                    for f, n in zip(flags, names, strict=True)
                ]
            ).list.drop_nulls()
        ).to_series()
    genres = genres.list.eval(pl.element().filter(pl.element() != ""))
    return pl.DataFrame([table.frame.get_column("item_id"), genres.alias("genres")])


def ratings_format(path: str | Path) -> TextFormat:
    """The layout of a ratings file: `::` (1M) or tab (100K), read from its first line.

    Args:
        path: the ratings file.

    Returns:
        Its `TextFormat` (user_id, item_id, rating, timestamp).

    Raises:
        DataError: the first line has neither separator.
    """
    first = peek_line(path)
    if not first and Path(path).stat().st_size == 0:
        raise DataError(path, None, None, "file is empty")
    if "::" in first:
        return TextFormat("::", encoding="latin-1", names=_RATING_COLUMNS)
    if "\t" in first:
        return TextFormat("\t", encoding="latin-1", names=_RATING_COLUMNS)
    raise DataError(
        path, 1, None, "not a MovieLens ratings file (expected user::movie::rating::time or tabs)"
    )


def movielens_chunks(
    files: MovieLensFiles,
    *,
    users: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
    **options: Unpack[ReadOptions],
) -> Iterator[TextChunk]:
    """CTR rows (rating 3 dropped) with the line numbers of their ratings (chunk sizes vary).

    Args:
        files: the dataset's files (see `detect_movielens`).
        users: the user table if already loaded (`load_users`); default: loaded here.
        items: the movie table if already loaded (`load_items`); default: loaded here.
        **options: the `ReadOptions` of the ratings file (chunk_rows, bad_rows, block_bytes,
            line_filter); bad_rows also takes the side tables' bad rows.

    Returns:
        An iterator of `TextChunk`s with the columns of `movielens_schema()`.
    """
    bad_rows = options_bad_rows(options)
    users = (users if users is not None else load_users(files, bad_rows)).with_columns(
        pl.lit(True).alias("_user")
    )
    items = (items if items is not None else load_items(files, bad_rows)).with_columns(
        pl.lit(True).alias("_item")
    )
    schema = movielens_schema()
    columns = [LABEL, *schema.feature_names]
    path = files.ratings
    fmt = ratings_format(path)
    parse = [int_conversion(name, pl.String) for name in _RATING_COLUMNS]
    for chunk in iter_text(path, fmt, **{**options, "bad_rows": bad_rows}):
        typed, (user_check, item_check, _, time_check) = apply(chunk.frame, parse)
        bad_rating = ~typed.get_column("rating").is_between(1, 5).fill_null(False).to_numpy()
        rating_check = Check("rating", "rating must be an integer from 1 to 5", bad_rating)
        frame = typed.drop("timestamp").join(users, on="user_id", how="left", maintain_order="left")
        frame = frame.join(items, on="item_id", how="left", maintain_order="left")
        unknown_user = Check(
            "user_id", "user not in the users file", frame.get_column("_user").is_null().to_numpy()
        )
        unknown_item = Check(
            "item_id", "movie not in the movies file", frame.get_column("_item").is_null().to_numpy()
        )
        checks = [user_check, item_check, rating_check, time_check, unknown_user, unknown_item]
        typed = reject_rows(TextChunk(frame, chunk.lines), checks, path, bad_rows)
        keep = (typed.frame.get_column("rating") != 3).to_numpy()
        labelled = typed.frame.filter(pl.Series(keep)).with_columns(
            (pl.col("rating") >= 4).cast(pl.Int8).alias(LABEL)
        )
        yield TextChunk(labelled.select(columns), typed.lines[keep])


def read_movielens(
    path: str | Path,
    *,
    ratings: str | Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bad_rows: BadRows | None = None,
) -> Iterator[pl.DataFrame]:
    """Stream MovieLens CTR rows as frames of exactly `chunk_rows` rows (the last may be shorter).

    Args:
        path: a MovieLens directory or ratings file (see `detect_movielens`).
        ratings: a ratings file to use instead of the directory's own.
        chunk_rows: rows per frame.
        bad_rows: where malformed rows go (default: raise a `DataError` at the first).

    Returns:
        An iterator of frames: `label` Int8, user_id/item_id/age Int64, gender/occupation/zip String,
        genres List(String); in the ratings file's order, rating-3 rows left out.
    """
    files = detect_movielens(path, ratings)
    return frames(rechunk(movielens_chunks(files, chunk_rows=chunk_rows, bad_rows=bad_rows), chunk_rows))
