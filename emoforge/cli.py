"""The ``emoforge`` command line. Each module in ``emoforge/commands`` adds its commands with ``register(app)``.

Command modules import what they run at module level (flows, Prefect, the warehouse), which takes seconds. The
console script (:func:`main`) therefore loads only the module that defines the command asked for — found by reading
the modules' source for their ``command("name")`` / ``add_typer(..., name="name")`` declarations, nothing imported —
and every module for ``--help`` or an unknown word. ``emoforge.cli.app`` (tests, ``python -m``) has every command.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
import sys
from functools import lru_cache
from pathlib import Path

import typer

from emoforge import commands
from schemas.home import offline_env, resolve_home

_DECLARED = re.compile(r"""@(?:app|commands)\.command\(\s*["']([\w-]+)["']|app\.add_typer\([^)]*?name=["']([\w-]+)["']"""
                       r"""|@(?:app|commands)\.command\(\)\s*\n\s*def (\w+)""")


def command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


@lru_cache(maxsize=1)
def command_index() -> dict[str, str]:
    """Top-level command name -> the module of ``emoforge/commands`` that declares it (read from the source)."""
    index: dict[str, str] = {}
    for mod in command_modules():
        text = (Path(commands.__path__[0]) / f"{mod}.py").read_text()
        for a, b, fn in _DECLARED.findall(text):
            index[a or b or fn.replace("_", "-")] = mod  # Typer names an unnamed command after its function
    return index


def build_app(modules: list[str] | None = None) -> typer.Typer:
    """A Typer app with the commands of ``modules`` (default: every command module)."""
    app = typer.Typer(
        name="emoforge",
        help="Build, review, voice, validate and publish emotional spoken-dialogue datasets.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for mod in modules or command_modules():
        importlib.import_module(f"emoforge.commands.{mod}").register(app)
    return app


def __getattr__(name: str):  # ``from emoforge.cli import app``: every command, built on first use
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


def home_argument(argv: list[str]) -> str | None:
    """The ``--home`` value of a command line (``--home PATH`` or ``--home=PATH``), without parsing the rest."""
    for i, arg in enumerate(argv):
        if arg == "--home" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--home="):
            return arg.split("=", 1)[1]
    return None


def main() -> None:  # pragma: no cover - thin wrapper (the console script)
    # Prefect reads its settings (PREFECT_HOME, the ephemeral server's start-up timeout, logging) once, when it is
    # imported, and the command modules import it: the home's offline switches must be in the environment first.
    home = resolve_home(home_argument(sys.argv[1:]))
    # Prefect creates its home folder (the emoforge home's .prefect) when imported, without parents: a first command
    # on a new home warned "Failed to create the Prefect home directory". The commands create the home anyway.
    with contextlib.suppress(OSError):
        home.mkdir(parents=True, exist_ok=True)
    offline_env(home)
    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    mod = command_index().get(words[0]) if words else None
    sys.exit(build_app([mod] if mod else None)())
