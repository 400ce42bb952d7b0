"""DeepCTR-Torch and torch-rechub, run through their own training APIs by `benchmarks/speed/peers.py`.

They need their own venv (`benchmarks/speed/install_peers.sh`), so they have no in-process `run`.
"""

from __future__ import annotations

from featmux.benchmarks.speed.contenders import Contender

CONTENDERS = (Contender("deepctr", "DeepCTR-Torch"), Contender("rechub", "torch-rechub"))
