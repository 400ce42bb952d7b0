"""DeepCTR-Torch and torch-rechub, run through their own training APIs by `benchmarks/speed/peers.py`.

They need their own venv (`benchmarks/speed/install_peers.sh`), so they have no in-process `run`. Both
train in the calling thread (DataLoader without workers), so their bf16 runs wrap each epoch's call of
their training code in `torch.autocast`; `peers.py` counts the nn.Linear outputs that came out bf16 to
show it held.
"""

from __future__ import annotations

from featmux.benchmarks.speed.contenders import DENSE_ADAM, Contender

CONTENDERS = (
    Contender("deepctr", "DeepCTR-Torch", optimizer=DENSE_ADAM, bf16=True),
    Contender("rechub", "torch-rechub", optimizer=DENSE_ADAM, bf16=True),
)
