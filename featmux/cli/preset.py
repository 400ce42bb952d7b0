"""Tuned presets: `configs/<dataset>_<model>.yaml` in the featmux checkout (BARS best runs for Frappe).

`featmux train` without `--config` starts from the preset of its dataset and model when one exists;
flags still override its keys.
"""

from __future__ import annotations

from pathlib import Path

PRESETS = Path(__file__).resolve().parents[2] / "configs"  # the checkout's configs/ (absent in a wheel)


def find_preset(dataset: str, model: str, folder: Path | None = None) -> Path | None:
    """The preset file for a dataset and model, or None.

    Args:
        dataset: a source name, e.g. "frappe".
        model: a model name in any spelling the registry accepts ("DCN-v2", "dcnv2").
        folder: where presets live (default `PRESETS`).

    Returns:
        `<folder>/<dataset>_<model>.yaml` if that file exists.

    Example:
        >>> find_preset("frappe", "FinalMLP")
        PosixPath('.../configs/frappe_finalmlp.yaml')
    """
    key = model.lower().replace("-", "").replace("_", "")
    path = (folder if folder is not None else PRESETS) / f"{dataset.lower()}_{key}.yaml"
    return path if path.is_file() else None
