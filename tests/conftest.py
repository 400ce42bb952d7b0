"""Shared fixtures. Real-data tests read ../shared/data (or $FEATMUX_DATA); where it is absent they skip,
unless FEATMUX_REQUIRE_DATA=1 (set by .ci/run), which turns such a skip into a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("FEATMUX_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real datasets; skips (or fails under FEATMUX_REQUIRE_DATA=1) when absent."""
    root = _data_root()
    if not root.is_dir():
        message = f"real datasets not found at {root} (set FEATMUX_DATA)"
        if os.environ.get("FEATMUX_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root
