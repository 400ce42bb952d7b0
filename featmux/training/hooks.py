"""Training-step hooks: modules that act between optimizer steps (e.g. CCE's periodic re-clustering).

Any submodule of a model that defines `on_train_step(step)` is called by the trainers (batch and
online) after each training step, with the global 1-based step number (it continues across epochs,
partitions and resumes), under `torch.no_grad()`. What a hook changes must live in the module's
state_dict, so that checkpoints and resumes carry it; a hook that needs randomness seeds its own
generator, so the training RNG stream is the same with or without hooks.

A hook that overwrites weights returns those parameters: the trainer then drops their optimizer state,
so Adam's moments and step count, fitted to the old values, do not steer the new ones (they start again
as for a fresh parameter; a checkpoint then stores no state for them, and a resume matches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TrainStepHook(Protocol):
    """A module that acts after training steps."""

    def on_train_step(self, step: int) -> Iterable[nn.Parameter] | None:
        """Called after training step `step` (1-based, global); returns the parameters it overwrote."""


Hook = Callable[[int], Iterable[nn.Parameter] | None]


def step_hooks(model: nn.Module) -> list[Hook]:
    """The `on_train_step` of every submodule of `model` that defines one, in module order."""
    return [m.on_train_step for m in model.modules() if isinstance(m, TrainStepHook)]


def run_step_hooks(hooks: list[Hook], step: int, optimizers: Sequence[torch.optim.Optimizer] = ()) -> None:
    """Call each hook with `step`, without building autograd graphs, and drop the optimizer state of the
    parameters a hook overwrote."""
    if not hooks:
        return
    with torch.no_grad():
        for hook in hooks:
            for parameter in hook(step) or ():
                for optimizer in optimizers:
                    optimizer.state.pop(parameter, None)
