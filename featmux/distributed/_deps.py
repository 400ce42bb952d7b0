"""The optional TorchRec dependency: one place that says how to install it when it is missing."""

from __future__ import annotations

INSTALL_HINT = (
    "featmux.distributed needs TorchRec on top of FBGEMM: run `bash scripts/install.sh --torchrec` "
    "(on CPU it installs fbgemm-gpu-cpu, then torchrec with --no-deps)"
)


def require_torchrec() -> None:
    """Raise an ImportError with the install recipe if torchrec or fbgemm_gpu cannot be imported."""
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised only on machines without the extra
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
