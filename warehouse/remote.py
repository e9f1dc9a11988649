"""Remotes: S3-compatible buckets that releases are pushed to and pulled from (through fsspec/s3fs).

A home records only each remote's name and URL (``<home>/remotes.json``)::

    {"team": {"url": "s3://datasets-bucket/emoforge"}}

Where to connect and who you are come from the environment at run time, never from the home:

==========================================  ===============================================================
variable                                     meaning
==========================================  ===============================================================
``EMOFORGE_REMOTE_<NAME>_ENDPOINT_URL``      endpoint of an S3-compatible server (MinIO, Ceph, R2, ...); else
                                             ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else AWS
``EMOFORGE_REMOTE_<NAME>_REGION``            region; else ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / the profile
``EMOFORGE_REMOTE_<NAME>_PROFILE``           a profile of ``~/.aws/config``; else ``AWS_PROFILE``
``EMOFORGE_REMOTE_<NAME>_ACCESS_KEY_ID``     credentials for this remote only; else the standard AWS chain
``EMOFORGE_REMOTE_<NAME>_SECRET_ACCESS_KEY`` (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``EMOFORGE_REMOTE_<NAME>_SESSION_TOKEN``     the shared credentials file, the profile, instance roles)
``EMOFORGE_REMOTE_<NAME>_ANON``              ``1``: unsigned requests (a public bucket; pull and list only)
==========================================  ===============================================================

``<NAME>`` is the remote's name upper-cased with ``-`` as ``_``. Layout in the bucket (see
``warehouse.remote_sync``)::

    <prefix>/releases/<version>/...             a release: the same files as releases/<version> in a home;
    <prefix>/releases/<version>/manifest.json   written last: a release exists once its manifest does
    <prefix>/.incoming/<version>-<digest>/      uploads in progress (never listed)
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import botocore.exceptions
import s3fs

from warehouse.store import Warehouse

REMOTES_FILE = "remotes.json"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/[^\s]*)?$")


class RemoteError(RuntimeError):
    """A remote that cannot be used, said as the user sees it (names the remote, never a secret)."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str

    @property
    def root(self) -> str:
        """``bucket/prefix`` (no scheme, no trailing slash): the base of every path in the bucket."""
        return self.url[len("s3://"):].rstrip("/")

    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    def __str__(self) -> str:
        return f"remote {self.name!r} ({self.url})"

    def env(self, what: str) -> str | None:
        key = f"EMOFORGE_REMOTE_{self.name.upper().replace('-', '_')}_{what}"
        return os.environ.get(key) or None

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options from the environment: what ``datasets.load_dataset(..., storage_options=...)``
        and ``pandas.read_parquet`` take. Holds secrets when they come from the EMOFORGE_REMOTE_* variables:
        pass it on, never print or store it."""
        opts: dict[str, Any] = {}
        endpoint = self.env("ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
        if self.env("REGION"):
            opts["client_kwargs"] = {"region_name": self.env("REGION")}
        if self.env("PROFILE"):
            opts["profile"] = self.env("PROFILE")
        if self.env("ACCESS_KEY_ID") or self.env("SECRET_ACCESS_KEY"):
            opts["key"], opts["secret"] = self.env("ACCESS_KEY_ID"), self.env("SECRET_ACCESS_KEY")
            if self.env("SESSION_TOKEN"):
                opts["token"] = self.env("SESSION_TOKEN")
        if (self.env("ANON") or "").lower() in ("1", "true", "yes"):
            opts["anon"] = True
        return opts

    def filesystem(self, cls: type[s3fs.S3FileSystem] = s3fs.S3FileSystem, **extra: Any) -> s3fs.S3FileSystem:
        """A fresh s3fs filesystem for this remote (no listing cache: another host may write at any time)."""
        opts = {**self.storage_options(), **extra}
        opts.setdefault("config_kwargs", {"connect_timeout": 10, "retries": {"max_attempts": 3, "mode": "standard"}})
        return cls(skip_instance_cache=True, use_listings_cache=False, **opts)

    def connect(self, cls: type[s3fs.S3FileSystem] = s3fs.S3FileSystem) -> s3fs.S3FileSystem:
        """:meth:`filesystem`, after checking the bucket answers to these credentials (one HEAD request), so that
        a missing bucket, missing or wrong credentials or an unreachable endpoint are said first and plainly."""
        fs = self.filesystem(cls)
        with remote_errors(self):
            try:
                fs.call_s3("head_bucket", Bucket=self.bucket)
            except FileNotFoundError:
                raise RemoteError(f"{self}: the bucket {self.bucket} does not exist (or is not visible with these "
                                  "credentials)") from None
        return fs


# ---- the home's list of remotes --------------------------------------------------------------------------------
def _read(home: Path) -> dict[str, dict[str, str]]:
    f = home / REMOTES_FILE
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise RemoteError(f"{f} is not valid JSON ({exc}); fix or delete it and add the remotes again") from None
    return data if isinstance(data, dict) else {}


def check_remote_url(url: str) -> str:
    url = url.strip()
    if not _URL.match(url):
        raise RemoteError(f"{url!r} is not an S3 URL; expected s3://BUCKET or s3://BUCKET/PREFIX (the endpoint of a "
                          "non-AWS server comes from EMOFORGE_REMOTE_<NAME>_ENDPOINT_URL or AWS_ENDPOINT_URL)")
    if any(part in (".", "..") for part in url[5:].split("/")):
        raise RemoteError(f"{url!r}: '.' and '..' are not allowed in a remote's prefix")
    return url.rstrip("/")


def add_remote(home: str | os.PathLike, name: str, url: str) -> Remote:
    """Record a remote (name + URL only). Re-adding a name with the same URL is a no-op; another URL is refused."""
    if not _NAME.match(name):
        raise RemoteError(f"remote name {name!r}: use 1-40 lowercase letters, digits, '-' or '_', starting with a letter")
    url = check_remote_url(url)
    wh = Warehouse(home)
    with wh.write_lock():
        data = _read(wh.home)
        if name in data and data[name].get("url") != url:
            raise RemoteError(f"remote {name!r} already points at {data[name]['url']}; remove it first "
                              f"(emoforge remote remove {name}) to point it elsewhere")
        data[name] = {"url": url}
        tmp = wh.home / f".{REMOTES_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, wh.home / REMOTES_FILE)
    return Remote(name, url)


def remove_remote(home: str | os.PathLike, name: str) -> None:
    wh = Warehouse(home)
    with wh.write_lock():
        data = _read(wh.home)
        if name not in data:
            raise RemoteError(f"no remote named {name!r} in {wh.home}")
        del data[name]
        tmp = wh.home / f".{REMOTES_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, wh.home / REMOTES_FILE)


def list_remotes(home: str | os.PathLike) -> list[Remote]:
    return [Remote(n, v["url"]) for n, v in sorted(_read(Warehouse(home).home).items())]


def get_remote(home: str | os.PathLike, name: str) -> Remote:
    remotes = {r.name: r for r in list_remotes(home)}
    if name not in remotes:
        known = ", ".join(remotes) or "none"
        raise RemoteError(f"no remote named {name!r} in {Warehouse(home).home} (known: {known}); add one with "
                          f"`emoforge remote add {name} s3://BUCKET/PREFIX`")
    return remotes[name]


# ---- errors as the user sees them ------------------------------------------------------------------------------
def explain(remote: Remote, exc: BaseException) -> str | None:
    """One line naming the remote and what to do, for the errors a remote gives; None for anything else."""
    who = str(remote)
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        var = f"EMOFORGE_REMOTE_{remote.name.upper().replace('-', '_')}"
        return (f"{who}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
                f"{var}_ACCESS_KEY_ID and {var}_SECRET_ACCESS_KEY for this remote only")
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return f"{who}: {exc}; check AWS_PROFILE / EMOFORGE_REMOTE_*_PROFILE"
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)):
        return (f"{who}: cannot reach the storage endpoint ({exc}); check EMOFORGE_REMOTE_*_ENDPOINT_URL / "
                "AWS_ENDPOINT_URL and the network")
    if isinstance(exc, PermissionError):
        return (f"{who}: access denied ({exc}); the credentials are wrong, expired, or lack permission on bucket "
                f"{remote.bucket}")
    if isinstance(exc, FileNotFoundError) and "bucket" in str(exc).lower():
        return f"{who}: the bucket {remote.bucket} does not exist (or is not visible with these credentials)"
    if isinstance(exc, botocore.exceptions.ClientError):
        return f"{who}: the server refused the request: {exc}"
    return None


@contextmanager
def remote_errors(remote: Remote) -> Iterator[None]:
    """Turn storage errors into a :class:`RemoteError` that names the remote (no stack trace for the user)."""
    try:
        yield
    except RemoteError:
        raise
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
        why = explain(remote, exc)
        if why is None:
            raise
        raise RemoteError(why) from None
