"""Helpers shared by every `featmux` sub-command: error exits, key=value options, config errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

console = Console(stderr=True)  # messages and logs go to stderr; results tables to stdout


def fail(message: str) -> NoReturn:
    """Print `error: message` and exit with status 2 (bad usage or input)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


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
