"""`featmux bench speed`: featmux against its peers, side by side, in one run on one machine.

Three parts, each printed and saved under `benchmarks/results/` with the machine's description:

1. Training (`training`): DeepFM and DCN-v2 (same embedding dim, MLP, batch, Adam lr and threads) on
   Frappe and on Criteo-like synthetic data with large vocabularies, trained by featmux (its Trainer,
   `optimizer=row_adam`), a plain PyTorch baseline (nn.EmbeddingBag(sparse=True) + SparseAdam, featmux's
   dense layers), DeepCTR-Torch and torch-rechub (their own training APIs, in the separate venv of
   `benchmarks/speed/install_peers.sh`); where bf16 is on, each of them again under bf16 autocast
   (`featmux-bf16`, `plain-bf16`, `deepctr-bf16`, `rechub-bf16`), and on Frappe `featmux-dense-adam`
   (the peers' optimizer) for the same-optimizer ratio. Every contender reads the same numpy arrays
   (per-field ids and labels, exported once); reported: training samples/s, time to a common
   validation AUC, peak RSS, test AUC (at the best validation epoch) and each ratio's optimizers and
   equal-AUC check (within 0.002).
2. Embedding layer alone (`embedding`): forward + backward + optimizer step, rows/s, of featmux's
   unified, hashing and collisionless layers against nn.EmbeddingBag and TorchRec.
3. Data pipeline (`pipeline`): rows/s from Criteo TSV and Avazu CSV text into tensors, first pass
   (parse, fingerprint, write the shard cache) and later epochs (read the cache).

Contenders run one after another, each in its own process holding the measurement lock (`flock` on
`/tmp/featmux-measure.lock` by default), never side by side: on a 2-core machine two torch jobs at once
slow each other down by an order of magnitude. Each records its threads and the load average. Nothing
here fails on timing: the numbers are printed and saved as measured.

    featmux bench speed                          # everything (about 40 minutes on 2 cores)
    featmux bench speed --part embedding --part pipeline
    python -m featmux.benchmarks.speed --help    # the same command without the featmux CLI

Modules: `config` (what runs), `workloads` (the shared data and model settings), `contenders/` (one
module per library: adding a contender is adding a file there), `timing` (machine, GEMM peaks, lock),
`embedding`, `pipeline`, `loop` and `inference` (the other parts), `driver` (runs the parts),
`report` (ratios and Markdown), `cli` (the command).
"""

from featmux.benchmarks.speed.cli import main, speed_command
from featmux.benchmarks.speed.config import SpeedConfig
from featmux.benchmarks.speed.driver import run_speed

__all__ = ["SpeedConfig", "main", "run_speed", "speed_command"]
