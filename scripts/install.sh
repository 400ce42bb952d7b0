#!/usr/bin/env bash
# One place for every install recipe featmux needs. Idempotent: a second run only checks.
#
#   bash scripts/install.sh            # library + CLI in .venv
#   bash scripts/install.sh --dev      # + test/lint tools, serving, ONNX and TorchRec (CPU), what CI uses
#   bash scripts/install.sh --serving  # + export/score/serve (safetensors, FastAPI, uvicorn) and ONNX
#   bash scripts/install.sh --torchrec # + TorchRec (CPU) only
#
# Why the TorchRec recipe is special: torchrec's metadata asks for the CUDA build of fbgemm-gpu
# (several GB). On CPU it runs on fbgemm-gpu-cpu, so torchrec is installed with --no-deps and its
# small runtime dependencies are listed here by hand.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FEATMUX_VENV:-$here/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

dev=0
serving=0
torchrec=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1; torchrec=1 ;;
    --serving) serving=1 ;;
    --torchrec) torchrec=1 ;;
    *) echo "install.sh: unknown option '$arg' (use --dev, --serving or --torchrec)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
if [ "$dev" = 1 ]; then
  "${pip[@]}" -e "$here[dev]"  # dev includes the serving and onnx extras
elif [ "$serving" = 1 ]; then
  "${pip[@]}" -e "$here[serving,onnx]"
else
  "${pip[@]}" -e "$here"
fi

if [ "$torchrec" = 1 ]; then
  "${pip[@]}" "fbgemm-gpu-cpu==1.8.0" tensordict "torchmetrics==1.0.3" tqdm pyre-extensions iopath
  "${pip[@]}" --no-deps "torchrec==1.8.0"
fi
echo "featmux installed in $venv"
