"""Benchmark: validate+publish vs a bare pyarrow write of the same rows, and peak memory as rows grow 10x.

    python bench/publish.py            # 40,150 DeepDialogue-shaped dialogues, then 401,500 (10x)
    python bench/publish.py --quick    # 2,000 then 20,000 (about a minute)

Dialogues are made locally without any LLM (``flows.synthetic``: 3-10 turns, <= 25 words a turn), loaded into
a fresh warehouse, then each measurement runs in its own child process so its peak RSS is its own:
``publish`` = ``warehouse.publish.publish_release`` (selection, splits, difficulty, Parquet per split, the GX gate,
checksums, manifest, card), ``bare`` = reading the same joined rows from the store and one ``pq.write_table`` of
utterances and dialogues. Modules are imported before the clock starts in both. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(kind: str, home: str) -> None:
    import pyarrow.parquet as pq

    from schemas.config import load_config
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    import great_expectations  # noqa: F401  (import cost is not publish cost)

    # the HTML/PNG report is for people and is timed on its own by `emoforge report`; not part of this figure
    cfg = load_config(publish={"sources": ["synthetic"], "report": False})
    wh = Warehouse(home)
    t0 = time.perf_counter()
    if kind == "publish":
        out = publish_release(home, cfg)
        rows = out["n_utterances"]
    else:
        con = wh.connect()
        utt = con.sql(
            "SELECT t.*, d.domain, d.model_a, d.model_b FROM turns t JOIN dialogues d ON d.id = t.dialogue_id "
            "WHERE d.status = 'accepted'").to_arrow_table()
        dlg = con.sql("SELECT * FROM dialogues WHERE status = 'accepted'").to_arrow_table()
        out_dir = Path(home) / "bare"
        out_dir.mkdir(exist_ok=True)
        pq.write_table(utt, out_dir / "utterances.parquet", compression="zstd")
        pq.write_table(dlg, out_dir / "dialogues.parquet", compression="zstd")
        rows = utt.num_rows
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "rows": rows}))


def measure(kind: str, home: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--home", home], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_scale(n: int) -> dict:
    from flows.synthetic import load_synthetic
    from schemas.taxonomy import load_taxonomy
    from warehouse.store import Warehouse

    with tempfile.TemporaryDirectory(prefix="emoforge-bench-") as home:
        t0 = time.perf_counter()
        load_synthetic(Warehouse(home), load_taxonomy(), n, seed=7)
        Warehouse(home).compact()
        load_s = time.perf_counter() - t0
        bare = measure("bare", home)
        pub = measure("publish", home)
    return {"dialogues": n, "utterances": pub["rows"], "load_s": round(load_s, 2),
            "bare_s": round(bare["seconds"], 3), "publish_s": round(pub["seconds"], 3),
            "ratio_vs_pyarrow": round(pub["seconds"] / bare["seconds"], 2),
            "peak_rss_mb": round(pub["peak_rss_mb"]), "bare_peak_rss_mb": round(bare["peak_rss_mb"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 and 20,000 dialogues (about a minute)")
    ap.add_argument("--dialogues", type=int, default=None)
    ap.add_argument("--child", choices=["publish", "bare"])
    ap.add_argument("--home")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.home)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = args.dialogues or (2000 if args.quick else 40150)
    results = [run_scale(base), run_scale(base * 10)]
    for r in results:
        print(f"{r['dialogues']:>7} dialogues / {r['utterances']:>8} utterances: publish {r['publish_s']:.2f}s, "
              f"bare pyarrow {r['bare_s']:.2f}s, ratio {r['ratio_vs_pyarrow']:.2f}x, peak RSS {r['peak_rss_mb']} MB",
              file=sys.stderr)
    first, tenx = results
    print(json.dumps({
        "bench": "publish", "dialogues": first["dialogues"], "ratio_vs_pyarrow": first["ratio_vs_pyarrow"],
        "peak_rss_mb": first["peak_rss_mb"], "publish_s": first["publish_s"], "bare_s": first["bare_s"],
        "dialogues_10x": tenx["dialogues"], "ratio_vs_pyarrow_10x": tenx["ratio_vs_pyarrow"],
        "peak_rss_mb_10x": tenx["peak_rss_mb"], "rss_growth_10x": round(tenx["peak_rss_mb"] / first["peak_rss_mb"], 2),
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
