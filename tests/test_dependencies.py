"""Every third-party module the package imports is a declared dependency: the dev install (CI) pulls in
extra packages (TorchRec's runtime deps), so a missing declaration would otherwise only show on a user's
plain `bash scripts/install.sh`."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "typing_extensions": "typing-extensions"}
# imported only inside the optional TorchRec path (scripts/install.sh --torchrec)
OPTIONAL = {"torchrec", "fbgemm_gpu"}
# extras whose modules featmux imports lazily (scripts/install.sh --serving)
EXTRAS = ("serving", "onnx")
EXTRA_MODULES = ("safetensors", "fastapi", "uvicorn", "onnx", "onnxscript", "onnxruntime")


def _imported_top_level_modules() -> set[str]:
    found = set()
    for path in (REPO / "featmux").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_third_party_import_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _names(project["dependencies"])
    for extra in EXTRAS:  # imported only by the commands that need them (checked below)
        declared |= _names(project["optional-dependencies"][extra])
    third_party = _imported_top_level_modules() - set(sys.stdlib_module_names) - {"featmux"} - OPTIONAL
    missing = sorted(m for m in third_party if DISTRIBUTION.get(m, m).replace("_", "-") not in declared)
    assert not missing, f"imported by featmux but not in pyproject's dependencies: {missing}"


def test_the_plain_install_imports_no_extra():
    """`import featmux` (and fm.load of a checkpoint) must work without the serving/onnx extras."""
    loaded = f"sorted(m for m in {EXTRA_MODULES} if m in sys.modules)"
    code = f"import sys, featmux, featmux.serving; print({loaded})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"imported at `import featmux`: {out}"
