"""Helpers shared by every `featmux` sub-command: error exits, key=value options, config errors."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from enum import Enum
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

EMBEDDING_HELP = "Embedding method, e.g. unified, hashing, collisionless, qr (an unknown name lists all)."
BUDGET_HELP = "1/16 or 0.25 (of the fp32 collisionless table's bytes), bytes:N, rows:N or params:N."

console = Console(stderr=True)  # messages and logs go to stderr; results tables to stdout


def fail(message: str) -> NoReturn:
    """Print `error: message` and exit with status 2 (bad usage or input).

    The message is printed as plain text: rich markup would eat bracketed parts such as `[row 5]`.
    """
    console.print("error:", style="bold red", end=" ")
    console.print(message, markup=False, highlight=False)
    raise typer.Exit(2)


def say(message: str) -> None:
    """Print a progress or log line (dim, on stderr), as plain text (no rich markup).

    Progress bars on stderr (tqdm's) are cleared first and redrawn after, so the line never lands on
    top of a bar in a terminal.
    """
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        console.print(message, style="dim", markup=False, highlight=False)


class LazyChoice:
    """A case-insensitive choice among an Enum's values (a typer `parser`), the Enum imported only when a
    value is parsed.

    Lets `featmux --help` list commands without importing the modules (and torch) that define the
    choices.

    Args:
        target: "module:EnumName".

    Example:
        >>> typer.Option(parser=LazyChoice("featmux.embeddings:EmbeddingMethod"), metavar="METHOD")
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def enum(self) -> type[Enum]:
        """The Enum (imported on first use)."""
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, value: Any) -> Any:
        """The Enum member whose value is `value`, in any case.

        Raises:
            typer.BadParameter: naming the valid values.
        """
        enum = self.enum()
        if isinstance(value, enum):
            return value
        text = str(value).strip().lower()
        for member in enum:
            if str(member.value).lower() == text:
                return member
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(str(m.value) for m in enum)}")


def choice_option(target: str, help: str, metavar: str) -> Any:
    """A typer option taking one value of the Enum `target` ("module:Name"), in any case (`LazyChoice`).

    Args:
        target: "module:EnumName".
        help: the option's help.
        metavar: its placeholder in the help, e.g. "METHOD".
    """
    return typer.Option(help=help, metavar=metavar, parser=LazyChoice(target))


def parse_mapping(values: list[str] | None, what: str) -> dict[str, Any]:
    """`key=value` options as a dict; values are JSON when they parse as JSON, else strings."""
    out: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            fail(f"{what} {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def config_overrides(flags: Mapping[str, Any], dataset_option: list[str] | None) -> dict[str, Any]:
    """The run-config keys given on the command line: `flags` (config key -> flag value) without the
    flags left unset (None), and `dataset_options` from the `--dataset-option key=value` flags."""
    overrides = {k: v for k, v in flags.items() if v is not None}
    if dataset_option:
        overrides["dataset_options"] = parse_mapping(dataset_option, "--dataset-option")
    return overrides


def validation_message(err: ValidationError) -> str:
    """A pydantic error as one `field: what is wrong` line per problem."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        lines.append(f"  {where}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
