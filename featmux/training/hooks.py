"""Training-step hooks: modules that act between optimizer steps (e.g. CCE's periodic re-clustering).

Any submodule of a model that defines `on_train_step(step)` is called by the trainers (batch and
online) after each training step, with the global 1-based step number (it continues across epochs,
partitions and resumes), under `torch.no_grad()`. What a hook changes must live in the module's
state_dict, so that checkpoints and resumes carry it; a hook that needs randomness seeds its own
generator, so the training RNG stream is the same with or without hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TrainStepHook(Protocol):
    """A module that acts after training steps."""

    def on_train_step(self, step: int) -> None:
        """Called after training step `step` (1-based, global)."""


def step_hooks(model: nn.Module) -> list[Callable[[int], None]]:
    """The `on_train_step` of every submodule of `model` that defines one, in module order."""
    return [m.on_train_step for m in model.modules() if isinstance(m, TrainStepHook)]


def run_step_hooks(hooks: list[Callable[[int], None]], step: int) -> None:
    """Call each hook with `step`, without building autograd graphs."""
    if not hooks:
        return
    with torch.no_grad():
        for hook in hooks:
            hook(step)
