#!/bin/bash
# The synthetic-10m grid (benchmarks/configs/synthetic_10m.yaml) and its 1M-row memory check on one CUDA GPU.
# Made for a lent GPU machine with no network and a fixed time slot: the data is generated once, then four
# `bench run` lanes share the GPU (cells of a lane run one after another, each in its own process so its
# peak RSS is its own). Lanes overlap, so the samples/s in these results are not throughput figures.
# Usage (repository root; wheels of missing packages in .whl/, results tarred into $OUT):
#   OUT=/tmp/out LANE_SECONDS=330 bash benchmarks/gpu/synthetic_10m_cuda.sh
set -u
OUT=${OUT:-/tmp/featmux-gpu-out}
LANE_SECONDS=${LANE_SECONDS:-330}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} FEATMUX_CACHE=/tmp/fmcache PYTHONUNBUFFERED=1
RES=/tmp/fmres
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cores', __import__('os').cpu_count())"

# the CUDA training tests, beside the data generation
(python3 -m pytest -q -p no:cacheprovider tests/training/test_trainer.py > "$OUT/pytest.log" 2>&1
 echo "pytest exit $?" >> "$OUT/pytest.log") &

prepare() {  # encode the grid's dataset into the cache once, before the lanes start
  python3 - "$1" <<'PY'
import sys, time
from featmux.benchmarks.grid import BenchmarkGrid
from featmux.data.prepare import prepare
spec = BenchmarkGrid.from_yaml(sys.argv[1]).cells()[0].spec
t = time.perf_counter()
data = prepare(spec["dataset"], spec.get("data"), spec.get("dataset_options"), None, False, print)
print(f"{sys.argv[1]}: {len(data.train):,} train rows encoded in {time.perf_counter() - t:.0f} s")
PY
}
prepare benchmarks/configs/synthetic_1m_memory.yaml &
prepare benchmarks/configs/synthetic_10m.yaml
wait

bench() { timeout "$LANE_SECONDS" python3 -m featmux.cli.main bench run "$1" --device cuda --threads 3 --isolate \
  --keep-going --no-progress --out "$RES/$2" "${@:3}"; }
{ bench benchmarks/configs/synthetic_1m_memory.yaml synthetic-1m-memory-cuda
  bench benchmarks/configs/synthetic_10m.yaml synthetic-10m --method collisionless; } > "$OUT/lane1.log" 2>&1 &
bench benchmarks/configs/synthetic_10m.yaml synthetic-10m --method unified --budget 1/4 --budget 1/16 \
  > "$OUT/lane2.log" 2>&1 &
bench benchmarks/configs/synthetic_10m.yaml synthetic-10m --method hashing --budget 1/4 --budget 1/16 \
  > "$OUT/lane3.log" 2>&1 &
bench benchmarks/configs/synthetic_10m.yaml synthetic-10m --budget 1/64 --budget 1 --method unified \
  --method hashing > "$OUT/lane4.log" 2>&1 &
wait
nvidia-smi --query-gpu=memory.used --format=csv,noheader
tar czf "$OUT/results.tgz" -C "$RES" --exclude='checkpoints' .
ls -la "$OUT"
