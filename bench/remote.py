"""Benchmark: `emoforge push`/`pull` throughput against a plain s3fs put/get of the same files, on loopback.

    python bench/remote.py            # a release of 40,000 synthetic dialogues
    python bench/remote.py --quick    # 2,000 dialogues (about a minute)

A release is published from a fresh home (``flows.synthetic``, no LLM; report off), then a real S3-protocol
server (moto's standalone server, a subprocess on 127.0.0.1) takes, in alternating rounds:

* ``push``  = ``warehouse.remote_sync.push_release`` (local digests, staged upload, ETag checks, server-side copy
  into place, second check, manifest written last, staging removed) into a fresh prefix;
* ``put``   = one ``s3fs.S3FileSystem.put`` (a fresh client, as each push has) of the same files (what ``aws s3 cp --recursive`` does) into another;
* ``pull``  = ``warehouse.remote_sync.pull_remote`` (download + sha256 of every file + verify) into a fresh dir;
* ``get``   = one ``s3fs.S3FileSystem.get`` of the same objects.

MB/s is the release's bytes over the wall time of each; the ratios (emoforge / plain, 1.0 = as fast) are of the
medians over the rounds, measured side by side in this one run. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the loopback S3 server helper the tests use


def _release(home: Path, n: int) -> Path:
    from schemas.config import load_config
    from flows.synthetic import load_synthetic
    from schemas.taxonomy import load_taxonomy
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    load_synthetic(Warehouse(home), load_taxonomy(), n, seed=7)
    return Path(publish_release(home, load_config(publish={"sources": ["synthetic"], "report": False}))["path"])


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n: int, rounds: int) -> dict:
    from s3server import MotoServer

    from warehouse.remote import Remote
    from warehouse.remote_sync import pull_remote, push_release

    with tempfile.TemporaryDirectory(prefix="emoforge-bench-remote-") as tmp, MotoServer(auth=False) as s3:
        tmp = Path(tmp)
        home = tmp / "home"
        t0 = time.perf_counter()
        rel = _release(home, n)
        build_s = time.perf_counter() - t0
        files = sorted(p for p in rel.rglob("*") if p.is_file())
        nbytes = sum(p.stat().st_size for p in files)
        os.environ.update({"AWS_ENDPOINT_URL": s3.url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
        bucket = s3.make_bucket("emoforge-bench")
        plain = Remote("plain", f"s3://{bucket}/plain")  # a fresh client per transfer, as `aws s3 cp` has
        times: dict[str, list[float]] = {"push": [], "put": [], "pull": [], "get": []}
        for i in range(rounds):
            tag = uuid.uuid4().hex[:8]
            remote = Remote("bench", f"s3://{bucket}/emoforge-{tag}")
            keys = [f"{bucket}/plain-{tag}/{p.relative_to(rel).as_posix()}" for p in files]
            times["put"].append(_timed(lambda: plain.filesystem().put([str(p) for p in files], keys)))
            times["push"].append(_timed(lambda: push_release(home, rel.name, remote)))
            got = tmp / f"get-{tag}"
            for p in files:
                (got / p.relative_to(rel)).parent.mkdir(parents=True, exist_ok=True)
            times["get"].append(_timed(lambda: plain.filesystem().get(keys, [str(got / p.relative_to(rel)) for p in files])))
            times["pull"].append(_timed(lambda: pull_remote(remote, rel.name, tmp / f"pull-{tag}")))
            shutil.rmtree(got), shutil.rmtree(tmp / f"pull-{tag}")
    med = {k: statistics.median(v) for k, v in times.items()}
    mbs = {k: round(nbytes / 1e6 / v, 1) for k, v in med.items()}
    return {"bench": "remote", "dialogues": n, "files": len(files), "mb": round(nbytes / 1e6, 2), "rounds": rounds,
            "push_mb_s": mbs["push"], "put_mb_s": mbs["put"], "push_ratio_vs_s3fs_put": round(med["put"] / med["push"], 3),
            "pull_mb_s": mbs["pull"], "get_mb_s": mbs["get"], "pull_ratio_vs_s3fs_get": round(med["get"] / med["pull"], 3),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()}, "build_release_s": round(build_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 dialogues (about a minute)")
    ap.add_argument("--dialogues", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = run(args.dialogues or (2000 if args.quick else 40000), args.rounds)
    out["quick"] = args.quick
    print(f"{out['dialogues']} dialogues, {out['mb']} MB in {out['files']} files: push {out['push_mb_s']} MB/s vs "
          f"s3fs put {out['put_mb_s']} MB/s ({out['push_ratio_vs_s3fs_put']}x); pull {out['pull_mb_s']} MB/s vs "
          f"s3fs get {out['get_mb_s']} MB/s ({out['pull_ratio_vs_s3fs_get']}x)", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
