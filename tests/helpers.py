"""Builders shared by tests in several directories.

`tests/conftest.py` puts this directory on `sys.path` (pytest runs with --import-mode=importlib, which
puts no test directory there), so a test module imports them with `from helpers import ...`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from featmux.data.encoded import EncodedBag, EncodedChunk
from featmux.features import CategoricalFeature, NumericFeature, Schema, ValueEncoding
from featmux.training.trainer import Trainer

# -- a planted-logit dataset: two univalent features, one bag, one numeric ------------------------------
PLANTED_SCHEMA = Schema(
    "label",
    (
        CategoricalFeature("a", ValueEncoding.INT),
        CategoricalFeature("b", ValueEncoding.INT),
        CategoricalFeature("tags", ValueEncoding.INT, multivalent=True),
    ),
    (NumericFeature("x"),),
)


def planted_chunk(n: int, seed: int, tag_weight: float = 0.5) -> EncodedChunk:
    """Rows of `PLANTED_SCHEMA` whose label follows a planted logit: per-value effects of a and b, plus x,
    plus `tag_weight` times the summed effects of the tags (0: the tags carry no signal)."""
    rng = np.random.default_rng(seed)
    effect = np.random.default_rng(99).normal(0, 1.5, size=(3, 50))
    a, b = rng.integers(0, 50, n), rng.integers(0, 50, n)
    lengths = rng.integers(0, 4, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tags = rng.integers(0, 50, offsets[-1])
    x = rng.normal(size=n).astype(np.float32)
    logit = effect[0][a] + effect[1][b]
    if tag_weight:
        tag_effect = np.add.reduceat(np.append(effect[2][tags], 0.0), offsets[:-1]) * (lengths > 0)
        logit = logit + tag_weight * tag_effect
    logit = logit + x - 0.5
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return EncodedChunk(
        np.stack([a, b], 1).astype(np.int64),
        (EncodedBag(tags.astype(np.int64), offsets),),
        x[:, None],
        labels,
    )


# -- interrupting a run -------------------------------------------------------------------------------
class Interrupt(Exception):
    """Raised in place of a training step, to stop a run the way a crash would."""


def interrupted(run: Callable[[], Any], after_steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Call `run` with `Trainer.train_step` raising `Interrupt` once `after_steps` steps were taken."""
    step = Trainer.train_step
    calls = {"n": 0}

    def wrapped(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after_steps:
            raise Interrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", wrapped)
    with pytest.raises(Interrupt):
        run()
    monkeypatch.setattr(Trainer, "train_step", step)
