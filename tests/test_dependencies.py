"""Every third-party module the package imports is a declared dependency: the dev install (CI) pulls in
extra packages (TorchRec's runtime deps), so a missing declaration would otherwise only show on a user's
plain `bash scripts/install.sh`."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml"}
# imported only inside the optional TorchRec path (scripts/install.sh --torchrec)
OPTIONAL = {"torchrec", "fbgemm_gpu"}


def _imported_top_level_modules() -> set[str]:
    found = set()
    for path in (REPO / "featmux").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_third_party_import_is_a_declared_dependency():
    declared = {
        re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    third_party = _imported_top_level_modules() - set(sys.stdlib_module_names) - {"featmux"} - OPTIONAL
    missing = sorted(m for m in third_party if DISTRIBUTION.get(m, m).replace("_", "-") not in declared)
    assert not missing, f"imported by featmux but not in pyproject's dependencies: {missing}"
