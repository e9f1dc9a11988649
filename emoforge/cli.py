"""The ``emoforge`` command line. Each module in ``emoforge/commands`` adds its commands with ``register(app)``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from emoforge import commands

app = typer.Typer(
    name="emoforge",
    help="Build, review, voice, validate and publish emotional spoken-dialogue datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")):
    importlib.import_module(f"emoforge.commands.{_mod}").register(app)


def main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(app())
