"""Whether to train under bf16 autocast: on where the hardware computes bf16 natively, off where it emulates.

bf16 matmuls are a 2-4x lever on CPUs with AVX-512 BF16 or AMX and on CUDA GPUs of compute capability
8.0 and later; elsewhere torch emulates them and they run slower than float32. `resolve_bf16` turns a
request (True, False or None for "auto") into a `Bf16Choice` that says what was chosen and why; every
result records it. Under autocast only the matmuls run in bf16: master weights, tables and optimizer
state stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (as /proc/cpuinfo spells them) meaning bf16 matmuls run in hardware."""
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
"""The CPU flags every speed figure is recorded with."""
AUTO_BF16_MIN_BATCH = 512
"""Auto turns bf16 on only from this batch size up. Measured on a 2-core Xeon with AMX
(`benchmarks/speed/bf16_batch.py`, train_step, bf16 / fp32): 0.75-1.04x at batch 128-256 (MovieLens
DCN-v2, Frappe DCN-v2, DIN), 1.07-1.32x at 512, 1.11-1.24x at 1024, 1.59x at 4096. Small matmuls do not
pay for autocast's casts."""


def cpu_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """The `REPORTED_FLAGS` this CPU has (empty where `cpuinfo` cannot be read, e.g. not Linux).

    Args:
        cpuinfo: the file to read (a fake one in tests).
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    found = set(line.partition(":")[2].split())
    return tuple(f for f in REPORTED_FLAGS if f in found)


@dataclass(frozen=True)
class Bf16Choice:
    """The bf16 autocast decision of a run.

    Args:
        enabled: autocast to bf16 in the training (and scoring) forward pass.
        native: the device computes bf16 in hardware.
        requested: what was asked: True, False or None (auto: follow `native`).
        device: the device type, "cpu" or "cuda".
        reason: one line saying why, e.g. "auto: native bf16 (cpu flags avx512_bf16, amx_bf16)".
    """

    enabled: bool
    native: bool
    requested: bool | None
    device: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record, with the CPU flags, for result files."""
        return {
            "bf16": self.enabled,
            "bf16_native": self.native,
            "bf16_requested": "auto" if self.requested is None else self.requested,
            "bf16_reason": self.reason,
            "device": self.device,
            "cpu_flags": list(cpu_flags()),
        }


def native_bf16(device: str = "cpu", cpuinfo: Path = CPUINFO) -> tuple[bool, str]:
    """(native, why) for bf16 matmuls on `device`.

    CPU: a flag of `NATIVE_BF16_FLAGS` in `cpuinfo`. torch's own checks are not used for the CPU: oneDNN
    reports bf16 "supported" on any AVX-512 core, where it is emulated and slower than float32.
    CUDA: `torch.cuda.is_bf16_supported(including_emulation=False)`.

    Args:
        device: a torch device string.
        cpuinfo: the CPU description to read.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "no GPU"
        return ok, f"{name}: {'native' if ok else 'no native'} bf16"
    flags = cpu_flags(cpuinfo)
    have = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if have:
        return True, f"native bf16 (cpu flags {', '.join(have)})"
    if not flags:
        return False, f"no bf16 flags readable ({cpuinfo} missing or without flags): assumed emulated"
    return False, f"bf16 would be emulated (no {' or '.join(NATIVE_BF16_FLAGS)} among cpu flags)"


def resolve_bf16(
    requested: bool | None, device: str = "cpu", cpuinfo: Path = CPUINFO, batch_size: int | None = None
) -> Bf16Choice:
    """The bf16 decision for a run: `requested` if given, else on where bf16 is native and batches big.

    Args:
        requested: True (force on), False (force off) or None (auto).
        device: where the model runs.
        cpuinfo: the CPU description to read.
        batch_size: the training batch; auto leaves bf16 off below `AUTO_BF16_MIN_BATCH` on the CPU
            (None: not known, the hardware alone decides).

    Example:
        >>> resolve_bf16(None).enabled  # True on a CPU with AVX-512 BF16 or AMX
    """
    native, why = native_bf16(device, cpuinfo)
    kind = torch.device(device).type
    if requested is None:
        small = kind == "cpu" and batch_size is not None and batch_size < AUTO_BF16_MIN_BATCH
        if native and small:
            why += f", but batch {batch_size} < {AUTO_BF16_MIN_BATCH}, where bf16 measured no faster"
        return Bf16Choice(native and not small, native, None, kind, f"auto: {why}")
    state = "on" if requested else "off"
    return Bf16Choice(requested, native, requested, kind, f"forced {state}; {why}")
