"""Fixtures of the distributed tests: small featmux layers and a real Frappe slice.

Everything here needs TorchRec (`bash scripts/install.sh --torchrec`, part of `--dev`); without it the
directory is skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torchrec", reason="TorchRec is an optional extra: bash scripts/install.sh --torchrec")

# the worker functions must be importable by name in the processes launch_local starts (pytest runs
# with --import-mode=importlib, which puts no test directory on sys.path)
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _dist_workers import FEATURES, make_sparse, make_vocabulary  # noqa: E402


@pytest.fixture
def features():
    return FEATURES


@pytest.fixture
def vocabulary():
    return make_vocabulary()


@pytest.fixture
def sparse():
    return make_sparse()


FRAPPE_ROWS = {"train": 8192, "valid": 2048, "test": 2048}


@pytest.fixture(scope="session")
def frappe_small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real Frappe directory: train = the first 8192 rows of frappe.validation.libfm, valid = the
    next 2048, test = the first 2048 rows of frappe.test.libfm (original libFM lines, CRLF kept)."""
    src = shared_data / "frappe"
    out = tmp_path_factory.mktemp("frappe_small")
    with open(src / "frappe.validation.libfm", "rb") as f:
        lines = f.readlines()
    n_train, n_valid = FRAPPE_ROWS["train"], FRAPPE_ROWS["valid"]
    (out / "frappe.train.libfm").write_bytes(b"".join(lines[:n_train]))
    (out / "frappe.validation.libfm").write_bytes(b"".join(lines[n_train : n_train + n_valid]))
    with open(src / "frappe.test.libfm", "rb") as f:
        test = [next(f) for _ in range(FRAPPE_ROWS["test"])]
    (out / "frappe.test.libfm").write_bytes(b"".join(test))
    return out
