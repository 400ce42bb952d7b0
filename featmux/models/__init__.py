"""CTR models. Each takes a built embedding layer and returns logits; `build_model` picks one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from featmux.embeddings.base import FeatureEmbedding
from featmux.models.autoint import AutoInt, AutoIntConfig
from featmux.models.base import CTRModel, config_from_dict
from featmux.models.dcn import DCN, DCNConfig
from featmux.models.dcnv2 import DCNStructure, DCNv2, DCNv2Config
from featmux.models.din import DIN, DINConfig
from featmux.models.dlrm import DLRM, DLRMConfig
from featmux.models.finalmlp import FinalMLP, FinalMLPConfig
from featmux.models.finalnet import FinalNet, FinalNetConfig
from featmux.models.fm import FM, DeepFM, DeepFMConfig, FMConfig
from featmux.models.lr import LR, LRConfig
from featmux.models.wdl import WDL, WDLConfig
from featmux.models.xdeepfm import XDeepFM, XDeepFMConfig

MODELS: dict[str, tuple[type[CTRModel], type]] = {
    "lr": (LR, LRConfig),
    "fm": (FM, FMConfig),
    "deepfm": (DeepFM, DeepFMConfig),
    "dcnv2": (DCNv2, DCNv2Config),
    "dlrm": (DLRM, DLRMConfig),
    "wdl": (WDL, WDLConfig),
    "dcn": (DCN, DCNConfig),
    "xdeepfm": (XDeepFM, XDeepFMConfig),
    "autoint": (AutoInt, AutoIntConfig),
    "finalmlp": (FinalMLP, FinalMLPConfig),
    "finalnet": (FinalNet, FinalNetConfig),
    "din": (DIN, DINConfig),
}


def build_model(
    name: str, embedding: FeatureEmbedding, num_dense: int, options: Mapping[str, Any] | None = None
) -> CTRModel:
    """Build model `name` (one of `MODELS`) over `embedding`; `options` fill its config (unknown keys fail).

    Example:
        >>> build_model("dcnv2", embedding, num_dense=0, options={"cross_layers": 1, "hidden": [192]})
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    model_cls, config_cls = MODELS[key]
    return model_cls(embedding, num_dense, config_from_dict(config_cls, options or {}))


__all__ = [
    "DCN",
    "DIN",
    "DLRM",
    "FM",
    "LR",
    "MODELS",
    "WDL",
    "AutoInt",
    "AutoIntConfig",
    "CTRModel",
    "DCNConfig",
    "DCNStructure",
    "DCNv2",
    "DCNv2Config",
    "DINConfig",
    "DLRMConfig",
    "DeepFM",
    "DeepFMConfig",
    "FMConfig",
    "FinalMLP",
    "FinalMLPConfig",
    "FinalNet",
    "FinalNetConfig",
    "LRConfig",
    "WDLConfig",
    "XDeepFM",
    "XDeepFMConfig",
    "build_model",
]
