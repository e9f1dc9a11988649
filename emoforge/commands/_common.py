"""Options and error handling shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from schemas.home import offline_env, resolve_home

console = Console(stderr=True, soft_wrap=True)

HomeOpt = Annotated[
    Optional[Path],
    typer.Option("--home", help="emoforge data directory (default: $EMOFORGE_HOME, else ./emoforge-home)"),
]


def open_home(home: Path | None) -> Path:
    path = resolve_home(home)
    offline_env(path)
    return path


def fail(message: str, code: int = 2) -> "typer.Exit":
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


class Commands:
    """Top-level commands defined at module level (``@commands.command()``), added to the app by ``register``."""

    def __init__(self) -> None:
        self._items: list[tuple] = []

    def command(self, *args, **kwargs):
        def add(fn):
            self._items.append((fn, args, kwargs))
            return fn
        return add

    def register(self, app: typer.Typer) -> None:
        for fn, args, kwargs in self._items:
            app.command(*args, **kwargs)(fn)
