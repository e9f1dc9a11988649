"""Push releases to a remote, list and pull them back, query them in place.

Push is atomic for readers: the files go under ``<prefix>/.incoming/<version>-<digest>/`` first; every object is
checked against the local file (size and ETag, which S3 computes from the bytes it stored: the md5 of a single
PUT or of a multipart upload's parts; an object whose ETag cannot be predicted is read back and its sha256
compared); then the objects are copied server-side to ``<prefix>/releases/<version>/``, checked again, and only
then ``manifest.json`` is written there, by an exclusive create. A release exists on a remote exactly when its
manifest does: a push killed at any point leaves nothing visible, and running it again reuses what was uploaded
and completes it. The manifest carries the sha256 of every file, so a pull verifies each one.

Pushing a version the remote already has is a no-op when the manifests are identical (same content) and refused
otherwise: releases are immutable everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb
import yaml
import s3fs
from s3fs.core import calculate_chunksize

from warehouse.releases import ReleaseError, hash_file, read_manifest, resolve_release, verify_release
from warehouse.remote import Remote, RemoteError, remote_errors
from warehouse.transfer import TransferMeter, file_digests
from warehouse.versions import check_version, sort_versions

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _fault(stage: str) -> None:
    """Fault injection for the kill drills: EMOFORGE_FAULT=push:<stage> kills the process at that stage."""
    if os.environ.get("EMOFORGE_FAULT") == f"push:{stage}":
        os.kill(os.getpid(), 9)


def release_url(remote: Remote, version: str) -> str:
    """``s3://bucket/prefix/releases/<version>``: what ``datasets.load_dataset`` takes with the remote's
    storage options."""
    return f"s3://{remote.root}/releases/{check_version(version)}"


def _final(remote: Remote, version: str) -> str:
    return f"{remote.root}/releases/{version}"


def _read_remote_manifest(fs: s3fs.S3FileSystem, remote: Remote, version: str) -> bytes | None:
    try:
        return fs.cat_file(f"{_final(remote, version)}/{MANIFEST}")
    except FileNotFoundError as exc:
        if "bucket" in str(exc).lower():
            raise
        return None


# ---- list ------------------------------------------------------------------------------------------------------
def remote_releases(remote: Remote) -> list[dict[str, Any]]:
    """The releases on a remote (only complete ones: those whose manifest exists), oldest version first."""
    fs = remote.connect()
    with remote_errors(remote):
        keys = fs.glob(f"{remote.root}/releases/*/{MANIFEST}")
        blobs = fs.cat([k for k in keys]) if keys else {}
    out = []
    for key, blob in blobs.items():
        try:
            m = json.loads(blob)
        except json.JSONDecodeError:
            log.warning("%s: %s is not valid JSON; skipped", remote, key)
            continue
        out.append({"version": m["version"], "url": f"s3://{key.rsplit('/', 1)[0]}", "created": m["created_at"],
                    "parent": m.get("parent"), "counts": {k: m["counts"][k] for k in ("dialogues", "utterances", "splits")},
                    "bytes": sum(f["bytes"] for f in m.get("files", {}).values()) + len(blob),
                    "manifest_sha256": hashlib.sha256(blob).hexdigest()})
    order = {v: i for i, v in enumerate(sort_versions([r["version"] for r in out]))}
    return sorted(out, key=lambda r: order[r["version"]])


# ---- push ------------------------------------------------------------------------------------------------------
def push_release(home: str | os.PathLike, version: str, remote: Remote, *, progress: bool = False) -> dict[str, Any]:
    """Upload release ``version`` of ``home`` to ``remote`` (see the module doc). Returns what was done."""
    t0 = time.monotonic()
    src = resolve_release(home, version)
    manifest_bytes = (src / MANIFEST).read_bytes()
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    files = read_manifest(src)["files"]
    fs = remote.connect()
    staging = f"{remote.root}/.incoming/{version}-{digest[:16]}"
    with remote_errors(remote):
        there = _read_remote_manifest(fs, remote, version)
        if there is not None:
            if hashlib.sha256(there).hexdigest() != digest:
                raise RemoteError(f"{remote} already has a release {version} with different content; releases are "
                                  "immutable: publish a new version and push that")
            _remove(fs, staging)  # a push killed after its manifest was written left this
            return {"version": version, "url": release_url(remote, version), "pushed": False, "bytes": 0}
        local = _local_digests(src, files)
        done = _uploaded(fs, staging, local)
        todo = [rel for rel in sorted(files) if rel not in done]
        nbytes = sum(files[r]["bytes"] for r in todo)
        with TransferMeter(f"push {version} to {remote.name}", nbytes, enabled=progress) as meter:
            if todo:
                fs.put([str(src / r) for r in todo], [f"{staging}/{r}" for r in todo], callback=meter.callback(on_file=lambda n: _fault(f"after_files:{n}")))
        _fault("after_upload")
        _verify_objects(fs, staging, local)
        _publish_staged(fs, remote, version, staging, local)
        _fault("before_manifest")
        try:
            fs.pipe_file(f"{_final(remote, version)}/{MANIFEST}", manifest_bytes, mode="create")
        except FileExistsError:  # another push of this version won the race: same content is fine
            if hashlib.sha256(_read_remote_manifest(fs, remote, version) or b"").hexdigest() != digest:
                raise RemoteError(f"{remote}: another push wrote a different release {version} meanwhile") from None
        _remove(fs, staging)
    return {"version": version, "url": release_url(remote, version), "pushed": True, "bytes": nbytes,
            "resumed_files": len(done), "upload_mb_per_s": round(meter.rate_mb_s(), 2),
            "seconds": round(time.monotonic() - t0, 3)}


def _local_digests(src: Path, files: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Digests of every file of the local release; refuses a damaged release (it would be pushed as is)."""
    out = {}
    bad = []
    for rel, meta in files.items():
        p = src / rel
        size = p.stat().st_size if p.is_file() else -1
        d = file_digests(p, calculate_chunksize(size)) if size >= 0 else {}
        if size != meta["bytes"] or d.get("sha256") != meta["sha256"]:
            bad.append(rel)
        out[rel] = {**d, "bytes": size}
    if bad:
        raise ReleaseError(f"the local release at {src} does not match its manifest ({', '.join(bad[:5])}); "
                           "nothing was pushed")
    return out


def _etag_ok(info: dict[str, Any], want: dict[str, Any]) -> bool | None:
    """True/False when the object's size and ETag settle it; None when the ETag's form is unknown (read it back)."""
    if int(info.get("size", -1)) != want["bytes"]:
        return False
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag in (want["etag"], want["etag_multipart"]):
        return True
    return None


def _uploaded(fs: s3fs.S3FileSystem, staging: str, local: dict[str, dict]) -> set[str]:
    """Files of an earlier, interrupted push of the same release that are already staged intact."""
    try:
        found = fs.find(staging, detail=True)
    except FileNotFoundError:
        return set()
    done = set()
    for key, info in found.items():
        rel = key[len(staging) + 1:]
        if rel in local and _etag_ok(info, local[rel]):
            done.add(rel)
    return done


def _verify_objects(fs: s3fs.S3FileSystem, base: str, local: dict[str, dict]) -> None:
    found = {k[len(base) + 1:]: v for k, v in fs.find(base, detail=True).items()}
    bad = []
    for rel, want in local.items():
        info = found.get(rel)
        ok = _etag_ok(info, want) if info is not None else False
        if ok is None:  # an ETag we cannot predict (e.g. a server-side multipart copy): read the object back
            h = hashlib.sha256()
            with fs.open(f"{base}/{rel}", "rb", block_size=8 << 20) as fh:
                while block := fh.read(8 << 20):
                    h.update(block)
            ok = h.hexdigest() == want["sha256"]
        if not ok:
            bad.append(rel)
    if bad:
        raise RemoteError(f"objects under s3://{base} do not match the local files after upload: {', '.join(bad[:5])}; "
                          "nothing was published; run the push again")


def _publish_staged(fs: s3fs.S3FileSystem, remote: Remote, version: str, staging: str,
                    local: dict[str, dict]) -> None:
    """Server-side copy of the staged objects to the release's place (the card last); stale objects there from an
    interrupted push of other content are removed. Nothing is visible until the manifest is written."""
    final = _final(remote, version)
    try:
        stale = [k for k in fs.find(final) if k[len(final) + 1:] not in local]
    except FileNotFoundError:
        stale = []
    if stale:
        fs.rm(stale)
    first = sorted(r for r in local if r != "README.md")  # in parallel; the card after them
    for batch in (first, [r for r in local if r == "README.md"]):
        if batch:
            fs.copy([f"{staging}/{r}" for r in batch], [f"{final}/{r}" for r in batch])
    _verify_objects(fs, final, local)


def _remove(fs: s3fs.S3FileSystem, prefix: str) -> None:
    try:
        keys = fs.find(prefix)
    except FileNotFoundError:
        return
    if keys:
        fs.rm(keys)


# ---- pull ------------------------------------------------------------------------------------------------------
def pull_remote(remote: Remote, version: str, dest: str | os.PathLike, *, progress: bool = False) -> Path:
    """Download release ``version`` from ``remote`` into ``dest`` (new or empty) and verify every sha256; a file
    that does not match is named and nothing is left at ``dest``."""
    version = check_version(version)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ReleaseError(f"destination {dest} exists and is not empty")
    fs = remote.connect()
    final = _final(remote, version)
    with remote_errors(remote):
        blob = _read_remote_manifest(fs, remote, version)
        if blob is None:
            known = ", ".join(r["version"] for r in remote_releases(remote)) or "none"
            raise ReleaseError(f"{remote} has no release {version} (known: {known})")
        files = json.loads(blob)["files"]
        tmp = dest.parent / f".{dest.name}.pulling"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            rels = sorted(files)
            with TransferMeter(f"pull {version} from {remote.name}", sum(files[r]["bytes"] for r in rels),
                               enabled=progress) as meter:
                for rel in rels:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get([f"{final}/{r}" for r in rels], [str(tmp / r) for r in rels], callback=meter.callback())
            (tmp / MANIFEST).write_bytes(blob)
            bad = [r for r in rels if (tmp / r).stat().st_size != files[r]["bytes"] or hash_file(tmp / r) != files[r]["sha256"]]
            if bad:
                raise ReleaseError(f"{remote}: release {version} is damaged: {', '.join(bad[:10])} "
                                   f"{'does' if len(bad) == 1 else 'do'} not match the sha256 in its manifest "
                                   f"(tampered or corrupted in the bucket); nothing was written to {dest}")
            problems = verify_release(tmp)
            if problems:
                raise ReleaseError(f"{remote}: copy of release {version} does not verify: {'; '.join(problems[:10])}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return dest


# ---- query in place --------------------------------------------------------------------------------------------
class ReadOnlyS3FileSystem(s3fs.S3FileSystem):
    """The remote as DuckDB sees it in ``emoforge sql --remote``: reads only."""

    cachable = False

    def open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any):
        if "r" not in mode or "+" in mode:
            raise PermissionError(f"emoforge sql --remote is read-only: cannot open {path} for writing")
        return super().open(path, mode, *args, **kwargs)

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError("emoforge sql --remote is read-only")

    rm = rm_file = mv = mkdir = makedirs = put = put_file = pipe = pipe_file = touch = _refuse


def remote_connection(remote: Remote, version: str | None = None) -> tuple[duckdb.DuckDBPyConnection, str]:
    """An in-memory DuckDB connection with views ``utterances`` and ``dialogues`` over a remote release's Parquet
    (the latest when ``version`` is None), read through an fsspec filesystem registered on the connection (no httpfs
    extension, nothing downloaded at run time). Returns the connection and the version."""
    with remote_errors(remote):
        if version is None:
            rows = remote_releases(remote)
            if not rows:
                raise ReleaseError(f"{remote} has no releases")
            version = rows[-1]["version"]
        version = check_version(version)
        fs = remote.connect(ReadOnlyS3FileSystem)
        blob = _read_remote_manifest(fs, remote, version)
    if blob is None:
        raise ReleaseError(f"{remote} has no release {version}")
    files = json.loads(blob)["files"]
    con = duckdb.connect()
    con.register_filesystem(fs)
    for table in ("utterances", "dialogues"):
        parts = [f"s3://{_final(remote, version)}/{r}" for r in sorted(files)
                 if r.startswith(f"data/{table}/") and r.endswith(".parquet")]
        if parts:
            listed = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], union_by_name=true)")
    return con, version


# ---- datasets straight from the bucket -------------------------------------------------------------------------
def card_data_files(card: str, config: str | None = None) -> dict[str, list[str]]:
    """``{split: [relative paths]}`` of one ``configs:`` entry of a release card (the default one when ``config``
    is None): what ``datasets.load_dataset`` reads from a local release directory."""
    if not card.startswith("---"):
        raise ReleaseError("the release card (README.md) has no YAML header")
    header = yaml.safe_load(card.split("---", 2)[1]) or {}
    configs = header.get("configs") or []
    chosen = [c for c in configs if (c.get("config_name") == config if config else c.get("default"))] or \
        ([] if config else configs[:1])
    if not chosen:
        names = ", ".join(str(c.get("config_name")) for c in configs)
        raise ReleaseError(f"the release card has no config {config!r} (configs: {names})")
    out: dict[str, list[str]] = {}
    for entry in chosen[0]["data_files"]:
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        out.setdefault(entry["split"], []).extend(paths)
    return out


def remote_data_files(remote: Remote, version: str, config: str | None = None) -> dict[str, list[str]]:
    """The card's ``configs:`` entry as absolute ``s3://`` URLs: pass it to ``datasets.load_dataset("parquet",
    data_files=..., storage_options=remote.storage_options())`` (``datasets`` takes only a local directory or a Hub
    repository as a dataset path, so the card is read here)."""
    fs = remote.connect()
    with remote_errors(remote):
        if _read_remote_manifest(fs, remote, version) is None:
            raise ReleaseError(f"{remote} has no release {version}")
        card = fs.cat_file(f"{_final(remote, version)}/README.md").decode()
    base = release_url(remote, version)
    return {split: [f"{base}/{p}" for p in paths] for split, paths in card_data_files(card, config).items()}


def load_remote_dataset(remote: Remote, version: str, config: str | None = None, **kwargs: Any):
    """``datasets.load_dataset`` of a release on a remote, reading its Parquet from the bucket with the card's
    configs; the same rows as ``datasets.load_dataset(<local release dir>, config)``."""
    import datasets  # noqa: PLC0415 - heavy (pulls in the HF stack); only this entry point needs it

    files = remote_data_files(remote, version, config)
    # emoforge keeps `datasets` offline (HF_HUB_OFFLINE=1: no Hub calls), and `datasets` applies that switch to every
    # URL, the bucket's too. Reading this bucket is what was asked; the "parquet" builder makes no Hub call.
    was = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = False
    try:
        return datasets.load_dataset("parquet", data_files=files, storage_options=remote.storage_options(), **kwargs)
    finally:
        datasets.config.HF_HUB_OFFLINE = was
