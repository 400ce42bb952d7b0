#!/usr/bin/env bash
# Install the peer libraries of `featmux bench speed` into their own venv (never into featmux's).
#
#   bash benchmarks/speed/install_peers.sh            # -> .venv-peers at the repo root
#   FEATMUX_PEERS_VENV=/tmp/peers bash benchmarks/speed/install_peers.sh
#
# DeepCTR-Torch 0.3.0 and torch-rechub 0.9.0 both ship DeepFM and DCN-v2 in their PyPI wheels. torch is
# installed first and pinned to the version featmux is measured with (2.13.0, CPU build): an unpinned
# torch can pull a multi-GB CUDA build. The peers then go in with --no-deps and their light runtime
# dependencies are listed by hand, so their metadata can never move torch. The venv ignores itself in
# git (a `.gitignore` holding `*` inside it). Idempotent: a second run only checks.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${FEATMUX_PEERS_VENV:-$here/.venv-peers}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
torch_version="${FEATMUX_TORCH_VERSION:-2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
printf '*\n' > "$venv/.gitignore"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

"${pip[@]}" "torch==$torch_version"
"${pip[@]}" "numpy>=1.19" "pandas>=1.2" "scikit-learn>=0.24" "tqdm>=4.60" "requests"
"${pip[@]}" --no-deps "deepctr-torch==0.3.0" "torch-rechub==0.9.0"

"$venv/bin/python" - <<PY
import torch, deepctr_torch, torch_rechub
from deepctr_torch.models import DCN, DeepFM  # noqa: F401
from torch_rechub.models.ranking import DCNv2, DeepFM as RechubDeepFM  # noqa: F401
assert torch.__version__.split("+")[0] == "$torch_version", torch.__version__
print(f"peers ready in $venv: torch {torch.__version__}, deepctr-torch {deepctr_torch.__version__}, "
      f"torch-rechub {getattr(torch_rechub, '__version__', '0.9.0')}")
PY
