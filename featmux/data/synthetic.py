"""A seedable synthetic CTR stream with a planted ground-truth model.

Rows have F categorical features with chosen cardinalities, values drawn from a (bounded, continuous
approximation of a) Zipf law, optional numeric count features, and a 0/1 label drawn from a planted
logistic model with per-value effects and FM-style pairwise interactions:

    logit = b0 + sum_f s_f w_f(v_f) + sum_{f<g} <u_f(v_f), u_g(v_g)> + sum_j beta_j z_j(x_j)

where w_f(v) ~ N(0, a^2) and u_f(v) ~ N(0, c^2 I_K) are derived by hashing (seed, f, v), so no
cardinality-sized table ever exists (26 features of 10M values cost nothing), z_j is the standardized
log of numeric feature j, and b0 is calibrated so that the mean CTR is `base_ctr`. A factorization
machine or DCN can learn this model; with the defaults its Bayes AUC is about 0.78.

Determinism: rows are generated in fixed blocks of `BLOCK_ROWS`, each from a numpy Generator seeded by
(seed, block index), so row r is the same whatever `chunk_rows` or `start_row` a caller uses, and any
row range can be generated without the rows before it.

Optional ID churn: every `churn_rows` rows, 1 in `churn_period` values of each feature is replaced by a
brand-new id (its effects are new too), like new ads and users arriving. Off by default.

Optional concept drift: with `drift_rows` > 0 the planted per-value effects move from one independent
set E_k to the next, E_{k+1}, over each segment of `drift_rows` rows (row r of segment k uses
cos(a) E_k + sin(a) E_{k+1}, a = pi/2 * (r mod drift_rows) / drift_rows). Effects keep their
distribution (the CTR stays calibrated), but what a value means changes: rows 2 * drift_rows apart have
independent planted models. Segment 0 starts from the effects of the stream without drift. Off by default.

Example:
    >>> config = SyntheticConfig(cardinalities=(10, 1_000, 100_000), seed=1)
    >>> for frame in iter_synthetic(config, num_rows=1_000_000, chunk_rows=262_144):
    ...     ...  # label Int8, C1..C3 Int64
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from featmux.data.text import DEFAULT_CHUNK_ROWS, TextChunk, frames, rechunk
from featmux.features import CategoricalFeature, NumericFeature, NumericTransform, Schema, ValueEncoding

BLOCK_ROWS = 65_536  # rows per RNG block; part of the stream's definition (changing it changes the data)
LABEL = "label"
# a Criteo-like mix of small and large vocabularies for demos and tests
DEFAULT_CARDINALITIES = (10, 20, 50, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000)

_STREAM_ROWS = 0  # SeedSequence domains: row blocks, calibration sample, planted parameters
_STREAM_CALIBRATION = 1
_CALIBRATION_ROWS = 32_768
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic dataset: its features, value distribution and planted model.

    Args:
        cardinalities: number of distinct values of each categorical feature (features C1..CF).
        num_numeric: numeric count features I1..IN (heavy-tailed, log-normal), used with LOG1P.
        zipf_exponent: exponent of the value frequencies (rank r has frequency ~ r^-exponent).
        latent_dim: K, rank of the planted pairwise interactions.
        base_ctr: mean click rate (the intercept is calibrated to it).
        first_order_std: std of the summed per-value effects in the logit.
        interaction_std: std of the summed pairwise interactions in the logit.
        numeric_std: std of the summed numeric effects in the logit.
        numeric_missing: probability that a numeric value is missing (null, no effect).
        seed: everything (values, labels, planted model) is a function of it.
        churn_rows: every this many rows, some values get new ids (0: no churn).
        churn_period: with churn on, 1 in `churn_period` values of each feature changes id at each step.
        drift_rows: concept drift: the planted effects turn into an independent set every this many rows
            (0: no drift).

    Example:
        >>> SyntheticConfig(cardinalities=(10,) * 3 + (10_000_000,) * 23, num_numeric=13, seed=7)
    """

    cardinalities: tuple[int, ...] = DEFAULT_CARDINALITIES
    num_numeric: int = 0
    zipf_exponent: float = 1.15
    latent_dim: int = 8
    base_ctr: float = 0.22
    first_order_std: float = 0.9
    interaction_std: float = 0.9
    numeric_std: float = 0.5
    numeric_missing: float = 0.1
    seed: int = 0
    churn_rows: int = 0
    churn_period: int = 10
    drift_rows: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cardinalities", tuple(int(c) for c in self.cardinalities))
        if not self.cardinalities:
            raise ValueError("cardinalities must name at least one feature")
        if min(self.cardinalities) < 1 or max(self.cardinalities) >= 1 << 40:
            raise ValueError(f"cardinalities must be in [1, 2**40), got {self.cardinalities}")
        if self.num_numeric < 0:
            raise ValueError(f"num_numeric must be >= 0, got {self.num_numeric}")
        if not 0.0 < self.zipf_exponent <= 5.0:
            raise ValueError(f"zipf_exponent must be in (0, 5], got {self.zipf_exponent}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not 0.0 < self.base_ctr < 1.0:
            raise ValueError(f"base_ctr must be in (0, 1), got {self.base_ctr}")
        for name in ("first_order_std", "interaction_std", "numeric_std"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.numeric_missing < 1.0:
            raise ValueError(f"numeric_missing must be in [0, 1), got {self.numeric_missing}")
        if not 0 <= self.seed < 1 << 63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.churn_rows < 0:
            raise ValueError(f"churn_rows must be >= 0, got {self.churn_rows}")
        if self.churn_period < 1:
            raise ValueError(f"churn_period must be >= 1, got {self.churn_period}")
        if self.drift_rows < 0:
            raise ValueError(f"drift_rows must be >= 0, got {self.drift_rows}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"C{i + 1}" for i in range(len(self.cardinalities)))

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f"I{j + 1}" for j in range(self.num_numeric))


def synthetic_schema(config: SyntheticConfig) -> Schema:
    """The schema of the stream.

    Args:
        config: the dataset.

    Returns:
        `label`, C1..CF (ValueEncoding.INT) and I1..IN (numeric, LOG1P).
    """
    return Schema(
        LABEL,
        tuple(CategoricalFeature(name, ValueEncoding.INT) for name in config.feature_names),
        tuple(NumericFeature(name, NumericTransform.LOG1P) for name in config.numeric_names),
    )


# -- counter-based hashing: planted parameters as a pure function of (seed, feature, value) --------------


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, a bijection on 64-bit words with full avalanche (numpy, vectorized).

    Args:
        x: uint64 array.

    Returns:
        uint64 array of the same shape (arithmetic wraps modulo 2^64).
    """
    x = x ^ (x >> _U64(30))
    x = x * _MIX1
    x = x ^ (x >> _U64(27))
    x = x * _MIX2
    return x ^ (x >> _U64(31))


def _hash_normals(key: int, values: np.ndarray, count: int) -> np.ndarray:
    """Standard normals [len(values), count], a deterministic function of (key, value, column).

    Each 64-bit hash gives two 32-bit uniforms and Box-Muller turns them into two normals.
    """
    base = mix64(values.astype(np.int64).view(_U64) ^ mix64(np.asarray([key], dtype=_U64)))
    pairs = (count + 1) // 2
    counters = (np.arange(1, pairs + 1, dtype=_U64) * _GOLDEN)[None, :]  # [1, pairs]
    bits = mix64(base[:, None] + counters)  # [n, pairs]
    u1 = ((bits >> _U64(32)).astype(np.float64) + 1.0) / 4294967296.0  # (0, 1]
    u2 = (bits & _U64(0xFFFFFFFF)).astype(np.float64) / 4294967296.0
    radius = np.sqrt(-2.0 * np.log(u1))
    normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], axis=1)
    return normals[:, :count]


def _feature_key(config: SyntheticConfig, feature: int) -> int:
    seed = np.asarray([config.seed], dtype=_U64)
    return int(mix64(mix64(seed) ^ np.asarray([feature + 1], dtype=_U64) * _GOLDEN)[0])


@functools.lru_cache(maxsize=32)
def _feature_scales(config: SyntheticConfig) -> np.ndarray:
    """Per-feature importance s_f (log-normal, mean square 1): some features matter more than others."""
    raw = np.exp(0.5 * _hash_normals(config.seed, np.arange(len(config.cardinalities)), 1)[:, 0])
    return raw / np.sqrt(np.mean(raw**2))


@functools.lru_cache(maxsize=32)
def _numeric_weights(config: SyntheticConfig) -> np.ndarray:
    """beta_j, scaled so that sum_j beta_j z_j has std `numeric_std` (z_j standard normal)."""
    if config.num_numeric == 0:
        return np.zeros(0)
    raw = _hash_normals(config.seed ^ 0x5EED, np.arange(config.num_numeric), 1)[:, 0]
    return config.numeric_std * raw / np.sqrt(np.sum(raw**2) + 1e-12)


def _numeric_location(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(mu_j, sigma_j) of log(value) for each numeric feature: counts of different typical sizes."""
    j = np.arange(config.num_numeric)
    return 0.5 + (j % 5).astype(np.float64), 1.0 + 0.25 * (j % 3)


def _segment_key(key: int, segment: int) -> int:
    """Hash key of the drift segment's effects E_segment; E_0 is the undrifted set (key unchanged)."""
    if segment == 0:
        return key
    return int(mix64(np.asarray([key ^ segment], dtype=_U64) * _GOLDEN)[0])


def _value_params(config: SyntheticConfig, feature: int, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Planted parameters [n, 1 + K] of the values of one feature at their rows (drift applied)."""
    key, width = _feature_key(config, feature), config.latent_dim + 1
    # parameters of the distinct values only: Zipf heads repeat a lot within a block
    uniques, inverse = np.unique(values, return_inverse=True)
    if config.drift_rows == 0:
        return _hash_normals(key, uniques, width)[inverse]
    segment = rows // config.drift_rows
    angle = (0.5 * np.pi / config.drift_rows) * (rows % config.drift_rows)
    out = np.empty((values.shape[0], width))
    for k in np.unique(segment).tolist():  # a block spans few segments
        rows_k = segment == k
        keys = [_segment_key(key, j) for j in (k, k + 1)]
        used, inverse_k = np.unique(inverse[rows_k], return_inverse=True)
        start, end = (_hash_normals(kj, uniques[used], width)[inverse_k] for kj in keys)
        a = angle[rows_k][:, None]
        out[rows_k] = np.cos(a) * start + np.sin(a) * end
    return out


def _planted_signal(
    config: SyntheticConfig, ids: list[np.ndarray], numeric: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """The planted logit without intercept, for n rows.

    Args:
        config: the dataset.
        ids: one int64 [n] array of value ids per categorical feature.
        numeric: float64 [n, N] raw numeric values, NaN where missing.
        rows: int64 [n] row numbers in the stream (they set the drifted effects).
    """
    n = ids[0].shape[0]
    num_features = len(config.cardinalities)
    k = config.latent_dim
    pairs = max(num_features * (num_features - 1) // 2, 1)
    first_scale = config.first_order_std / np.sqrt(num_features)
    # sum over pairs of <u_f, u_g> with N(0, c^2) entries has variance pairs * K * c^4
    latent_scale = np.sqrt(config.interaction_std / np.sqrt(pairs * k))
    scales = _feature_scales(config)
    signal = np.zeros(n)
    total = np.zeros((n, k))  # sum_f u_f  [n, K]
    squares = np.zeros(n)  # sum_f |u_f|^2  [n]
    for f, values in enumerate(ids):
        params = _value_params(config, f, values, rows)  # [n, 1 + K]
        signal += first_scale * scales[f] * params[:, 0]
        latent = params[:, 1:] * (latent_scale * np.sqrt(scales[f]))
        total += latent
        squares += np.einsum("nk,nk->n", latent, latent)
    signal += 0.5 * (np.einsum("nk,nk->n", total, total) - squares)  # FM identity: sum over f < g
    if config.num_numeric:
        mu, sigma = _numeric_location(config)
        z = (np.log1p(numeric) - mu) / sigma
        signal += np.nan_to_num(z, nan=0.0) @ _numeric_weights(config)
    return signal


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@functools.lru_cache(maxsize=32)
def _intercept(config: SyntheticConfig) -> float:
    """b0 such that the mean click probability is `base_ctr` (bisection on a calibration sample)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, _STREAM_CALIBRATION])))
    rows = np.arange(_CALIBRATION_ROWS, dtype=np.int64)
    ids, numeric, _ = _draw(config, rng, rows)
    signal = _planted_signal(config, ids, numeric, rows)
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if _sigmoid(signal + middle).mean() < config.base_ctr:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _zipf_ranks(uniform: np.ndarray, cardinality: int, exponent: float) -> np.ndarray:
    """Ranks in [0, cardinality) with P(rank r) ~ (r + 1)^-exponent (inverse CDF of the continuous law)."""
    top = float(cardinality) + 1.0
    if abs(exponent - 1.0) < 1e-9:
        x = np.power(top, uniform)
    else:
        power = 1.0 - exponent
        x = np.power(1.0 + uniform * (top**power - 1.0), 1.0 / power)
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, cardinality - 1)


def _churned(config: SyntheticConfig, feature: int, ranks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Ids after churn: rank r's id changes at the steps where (step + phase_r) % churn_period == 0."""
    if config.churn_rows == 0:
        return ranks
    period = config.churn_period
    step = rows // config.churn_rows
    phase = (mix64(ranks.view(_U64) ^ _U64(_feature_key(config, feature))) % _U64(period)).astype(np.int64)
    generation = (step + phase) // period
    # generation 0 keeps the rank as id; later generations get ids beyond the cardinality
    return ranks + generation * config.cardinalities[feature]


def _draw(
    config: SyntheticConfig, rng: np.random.Generator, rows: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Feature ids, raw numeric values (NaN = missing) and label uniforms for `rows` (fixed draw order)."""
    n = rows.shape[0]
    ids = [
        _churned(config, f, _zipf_ranks(rng.random(n), card, config.zipf_exponent), rows)
        for f, card in enumerate(config.cardinalities)
    ]
    numeric = np.empty((n, config.num_numeric))
    if config.num_numeric:
        mu, sigma = _numeric_location(config)
        z = rng.standard_normal((n, config.num_numeric))
        numeric = np.floor(np.exp(mu + sigma * z))
        numeric[rng.random((n, config.num_numeric)) < config.numeric_missing] = np.nan
    return ids, numeric, rng.random(n)


def _block(config: SyntheticConfig, index: int) -> pl.DataFrame:
    """Rows [index * BLOCK_ROWS, (index + 1) * BLOCK_ROWS) of the stream."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, _STREAM_ROWS, index])))
    rows = np.arange(index * BLOCK_ROWS, (index + 1) * BLOCK_ROWS, dtype=np.int64)
    ids, numeric, uniform = _draw(config, rng, rows)
    probability = _sigmoid(_intercept(config) + _planted_signal(config, ids, numeric, rows))
    columns = [pl.Series(LABEL, (uniform < probability).astype(np.int8))]
    columns += [pl.Series(name, values) for name, values in zip(config.feature_names, ids, strict=True)]
    columns += [
        pl.Series(name, numeric[:, j], dtype=pl.Float64, nan_to_null=True)
        for j, name in enumerate(config.numeric_names)
    ]
    return pl.DataFrame(columns)


def iter_synthetic(
    config: SyntheticConfig,
    num_rows: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    start_row: int = 0,
) -> Iterator[pl.DataFrame]:
    """Stream rows [start_row, start_row + num_rows) of the synthetic dataset.

    Memory stays at about one block (`BLOCK_ROWS` rows) plus one chunk, whatever `num_rows`.

    Args:
        config: the dataset.
        num_rows: rows to generate.
        chunk_rows: rows per frame (the last may be shorter).
        start_row: first row (0-based); disjoint ranges give disjoint samples (e.g. train / test).

    Returns:
        An iterator of frames: `label` Int8, C1..CF Int64 ids, I1..IN Float64 (null = missing). Row r
        is the same whatever `chunk_rows` and `start_row` are.
    """
    if num_rows < 0 or start_row < 0:
        raise ValueError(f"num_rows and start_row must be >= 0, got {num_rows} and {start_row}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return frames(rechunk(_blocks(config, start_row, start_row + num_rows), chunk_rows))


def _blocks(config: SyntheticConfig, start: int, stop: int) -> Iterator[TextChunk]:
    for index in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
        first = index * BLOCK_ROWS
        low, high = max(start, first) - first, min(stop, first + BLOCK_ROWS) - first
        frame = _block(config, index).slice(low, high - low)
        yield TextChunk(frame, np.arange(first + low, first + high, dtype=np.int64))


def planted_logits(config: SyntheticConfig, frame: pl.DataFrame, start_row: int = 0) -> np.ndarray:
    """The ground-truth logits of rows of this dataset (labels were drawn as Bernoulli(sigmoid(logit))).

    Their AUC against the labels is the Bayes AUC, the best any model can reach.

    Args:
        config: the dataset the rows come from.
        frame: rows as yielded by `iter_synthetic`.
        start_row: stream row number of the frame's first row (it matters only with drift).

    Returns:
        float64 [n] logits.
    """
    ids = [frame.get_column(name).cast(pl.Int64).to_numpy() for name in config.feature_names]
    numeric = np.empty((frame.height, config.num_numeric))
    for j, name in enumerate(config.numeric_names):
        numeric[:, j] = frame.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
    rows = np.arange(start_row, start_row + frame.height, dtype=np.int64)
    return _intercept(config) + _planted_signal(config, ids, numeric, rows)
