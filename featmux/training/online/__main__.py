"""python -m featmux.training.online BENCHMARK.yaml OUT_DIR [WORK_DIR]: run an online benchmark."""

import sys

from featmux.training.online.benchmark import run_online_benchmark

if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m featmux.training.online BENCHMARK.yaml OUT_DIR [WORK_DIR]")
    run_online_benchmark(sys.argv[1], sys.argv[2], *sys.argv[3:], log=lambda m: print(m, flush=True))
