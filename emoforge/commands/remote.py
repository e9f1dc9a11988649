"""Remote commands: `remote add|list|remove` and `push` (S3-compatible buckets; see warehouse/remote.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from emoforge.commands._common import HomeOpt, console, fail, open_home
from warehouse.releases import ReleaseError
from warehouse.remote import RemoteError, add_remote, get_remote, list_remotes, remove_remote
from warehouse.remote_sync import push_release
from warehouse.versions import VersionError

remote_app = typer.Typer(help="S3-compatible buckets to push releases to and pull them from.", no_args_is_help=True)


@remote_app.command("add")
def remote_add(
    name: Annotated[str, typer.Argument(help="short name, e.g. team")],
    url: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX")],
    home: HomeOpt = None,
) -> None:
    """Record a remote (only its name and URL: endpoint, region and credentials come from the environment)."""
    path = open_home(home)

    try:
        r = add_remote(path, name, url)
    except RemoteError as exc:
        fail(str(exc))
    console.print(f"{r} added; credentials and endpoint come from the environment "
                  f"(EMOFORGE_REMOTE_{name.upper().replace('-', '_')}_* or the standard AWS variables)")


@remote_app.command("list")
def remote_list(home: HomeOpt = None,
                as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
    """The remotes of this home."""
    path = open_home(home)

    try:
        rows = [{"name": r.name, "url": r.url} for r in list_remotes(path)]
    except RemoteError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        typer.echo(f"{r['name']}\t{r['url']}")


@remote_app.command("remove")
def remote_remove(name: Annotated[str, typer.Argument()], home: HomeOpt = None) -> None:
    """Forget a remote (nothing in the bucket is touched)."""
    path = open_home(home)

    try:
        remove_remote(path, name)
    except RemoteError as exc:
        fail(str(exc))
    console.print(f"remote {name!r} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(remote_app, name="remote")

    @app.command()
    def push(
        version: Annotated[str, typer.Argument(help="release version, e.g. 0.2.0")],
        to: Annotated[str, typer.Option("--to", help="remote name (emoforge remote add)")],
        home: HomeOpt = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        """Upload a release to a remote atomically (nothing is visible there until every file is verified)."""
        path = open_home(home)

        try:
            out = push_release(path, version, get_remote(path, to), progress=progress)
        except (ReleaseError, RemoteError, VersionError) as exc:
            fail(str(exc))
        if out["pushed"]:
            console.print(f"release {version} pushed to {to}: {out['bytes'] / 1e6:.1f} MB uploaded at {out['upload_mb_per_s']} MB/s, "
                          f"{out['seconds']:.1f}s in all"
                          + (f" ({out['resumed_files']} files reused from an interrupted push)" if out["resumed_files"] else "")
                          + "; every object verified")
        else:
            console.print(f"release {version} is already on {to} with the same content; nothing to do")
        typer.echo(out["url"])
