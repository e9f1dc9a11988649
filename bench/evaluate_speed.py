"""How long ``emoforge evaluate`` takes on a release of about 10,000 utterances, cold and with a warm embedding cache.

In one temporary home: imports the first ``--dd-train`` train and ``--dd-test`` test dialogues of DailyDialog (from
``../shared/benchdata/dailydialog``), publishes a synthetic release of ``--dialogues`` dialogues (1,500 give about
9,800 utterances, every text distinct), then runs the evaluation twice: the first embeds every text (cold), the
second finds them all in the cache (warm; the issue's target is under 2 minutes on this machine). The DailyDialog
ceiling is cached after the first run too, as it is for a user.

    python bench/evaluate_speed.py [--quick] [--dialogues N]

Ends with one JSON line: cold and warm seconds, utterances scored, texts embedded, the warm run's split of time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 dialogues (about 2,000 utterances)")
    ap.add_argument("--dialogues", type=int, help="dialogues in the release (default 1,500)")
    ap.add_argument("--dd-train", type=int, default=300, help="DailyDialog train dialogues (the ceiling's data)")
    ap.add_argument("--dd-test", type=int, default=300, help="DailyDialog test dialogues")
    a = ap.parse_args()
    n_dialogues = a.dialogues or (300 if a.quick else 1500)
    tmp = Path(tempfile.mkdtemp(prefix="emoforge-bench-evaluate-"))
    home = tmp / "home"
    from schemas.home import offline_env

    offline_env(home)
    from bench.train import dd_subset
    from flows.synthetic import load_synthetic
    from schemas.config import Config
    from schemas.taxonomy import load_taxonomy
    from warehouse.evaluation import ProbeOptions, evaluate_release
    from warehouse.importers import import_dailydialog
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    import_dailydialog(home, dd_subset(tmp / "dd", a.dd_train, a.dd_test))
    load_synthetic(Warehouse(home), load_taxonomy("deepdialogue"), n_dialogues, seed=1)
    cfg = Config.model_validate({"publish": {"sources": ["synthetic"], "report": False}})
    version = publish_release(home, cfg, evaluate=False)["version"]
    opts = ProbeOptions(sets=("dailydialog",))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t = time.perf_counter()
    cold = evaluate_release(home, version, opts, log=log)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = evaluate_release(home, version, opts, write=False, log=log)
    warm_s = time.perf_counter() - t
    dd = warm["sets"]["dailydialog_test"]
    print(json.dumps({
        "bench": "evaluate_speed", "quick": a.quick, "release_dialogues": n_dialogues,
        "release_train_utterances": warm["train"]["n"], "utterances_scored": warm["timing"]["utterances_scored"],
        "cold_s": round(cold_s, 1), "cold_embedded": cold["timing"]["embedded_now"],
        "warm_s": round(warm_s, 1), "warm_embedded": warm["timing"]["embedded_now"],
        "warm_timing": warm["timing"], "warm_under_2_min": warm_s < 120,
        "same_figures_twice": cold["sets"]["dailydialog_test"]["probe"] == dd["probe"],
        "dailydialog_test_n": dd["n"],
    }))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
