"""Side by side: does a generated release teach ERC that transfers to real conversation, next to a real one?

In one temporary home, in one run:

1. imports DailyDialog from ``../shared/benchdata/dailydialog`` (``--quick``: the first ``--dd-train`` train and
   ``--dd-test`` test dialogues of the public files);
2. publishes a **DailyDialog release** from DailyDialog *train* dialogues. Workaround, until imported data is
   publishable (the gates issue): the bench copies them as ordinary records (source ``dailydialog-train``) with
   DailyDialog's labels spelled as the ``erc`` preset's emotions (happiness -> Happy, fear -> Anxious, ...; each
   maps back to the same erc7 class) and publishes them with the ``erc`` taxonomy;
3. publishes a **generated release**: ``emoforge build`` against the project's OpenAI-compatible stub
   (``flows/llm/stub.py``), the same number of dialogues;
4. scores both with ``emoforge evaluate`` (linear probe; ceiling and majority baseline beside it);
5. trains SmolLM2-135M-Instruct (the trainer's default base model) with LoRA on the same number of training
   samples from each release and reports weighted-F1, macro-F1 and accuracy on DailyDialog test, with what it
   predicted, and beside it on *exactly the same utterances* (``same_utterances``): the majority baseline
   (DailyDialog train's majority label, and the training release's: ``llm.<release>.majority_training_release``),
   the probe of each release and the ceiling.

    python bench/train.py [--quick] [--samples N] [--eval N] [--probe-only]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DD = ROOT.parent / "shared" / "benchdata" / "dailydialog"
DD_TO_ERC = {"neutral": "Neutral", "anger": "Angry", "disgust": "Disgusted", "fear": "Anxious",
             "happiness": "Happy", "sadness": "Sad", "surprise": "Surprised"}


def dd_subset(dest: Path, n_train: int | None, n_test: int | None) -> Path:
    """DailyDialog's own layout with the first N dialogues of train and test (all with None)."""
    for split, n in (("train", n_train), ("test", n_test)):
        (dest / split).mkdir(parents=True)
        for name in (f"dialogues_{split}.txt", f"dialogues_emotion_{split}.txt"):
            lines = (DD / split / name).read_text(encoding="utf-8").splitlines(keepends=True)
            (dest / split / name).write_text("".join(lines if n is None else lines[:n]), encoding="utf-8")
    return dest


def dailydialog_release(home: Path, n_dialogues: int) -> str:
    """Workaround (see the module doc): DailyDialog train dialogues as records, published with the erc preset."""
    from schemas.config import load_config
    from schemas.records import Dialogue, Turn, content_id, text_hash
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    wh = Warehouse(home)
    rows = wh.query(
        "SELECT d.id, list(t.text ORDER BY t.idx) AS texts, list(t.label ORDER BY t.idx) AS labels "
        "FROM dialogues d JOIN turns t ON t.dialogue_id = d.id WHERE d.source = 'dailydialog' "
        "AND d.source_split = 'train' GROUP BY d.id ORDER BY d.id").to_pylist()
    # the release gate's bounds (3-10 turns, at most 40 words a turn) hold for generated data; keep DailyDialog
    # dialogues inside them
    rows = [r for r in rows if 3 <= len(r["texts"]) <= 10 and max(len(t.split()) for t in r["texts"]) <= 40]
    rows = rows[:n_dialogues]
    dialogues, turns = [], []
    for r in rows:
        did = content_id("dlg", "dailydialog-train", r["id"])
        turns += [Turn(id=Turn.make_id(did, i), dialogue_id=did, idx=i, speaker="AB"[i % 2], model="human", text=t,
                       intended_emotion=DD_TO_ERC[lab], label=DD_TO_ERC[lab], n_words=len(t.split()))
                  for i, (t, lab) in enumerate(zip(r["texts"], r["labels"]))]
        dialogues.append(Dialogue(id=did, source="dailydialog-train", domain="Relationships", model_a="human",
                                  model_b="human", n_turns=len(r["texts"]), status="accepted", decided_by="import",
                                  text_hash=text_hash(r["texts"])))
    wh.upsert(turns)
    wh.upsert(dialogues)
    cfg = load_config(taxonomy="erc", publish={"sources": ["dailydialog-train"], "report": False})
    return publish_release(home, cfg, evaluate=False)["version"]


def generated_release(home: Path, n_dialogues: int) -> str:
    from flows.build import BuildConfig, run_build
    from schemas.config.models import parse_models_config
    from flows.llm.stub import StubConfig, StubServer

    cfg = BuildConfig.model_validate({"taxonomy": "erc", "publish": {"report": False}, "speech": {"enabled": False}})
    with StubServer(StubConfig()) as stub:
        ep = [{"base_url": stub.url}]
        mcfg = parse_models_config({
            "models": {m: {"endpoints": ep, "timeout_s": 10.0, "max_concurrency": 16} for m in ("m1", "m2", "judge")},
            "pairs": [["m1", "m1"], ["m2", "m2"], ["m1", "m2"], ["m2", "m1"]], "judges": ["judge"]})
        summary = run_build(home, cfg, mcfg, n_dialogues=n_dialogues, seed=0, publish=True, progress=False,
                            evaluate=False)
    return summary["version"]


def _fig(s: dict) -> dict:
    return {k: round(s[k], 4) for k in ("weighted_f1", "macro_f1", "accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a DailyDialog subset and few samples (about 10 min)")
    ap.add_argument("--samples", type=int, help="training samples from each release")
    ap.add_argument("--eval", type=int, help="DailyDialog test utterances the LLM is scored on")
    ap.add_argument("--dialogues", type=int, help="dialogues per release")
    ap.add_argument("--probe-only", action="store_true", help="skip the LLM training: the evaluate probe only")
    a = ap.parse_args()
    # SIGTERM exits like Ctrl-C: the temporary home is removed and Prefect's ephemeral API server (a child process
    # stopped by an atexit hook) goes with it; the default SIGTERM left that server running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    samples = a.samples or (48 if a.quick else 400)
    n_eval = a.eval or (96 if a.quick else 600)
    n_dlg = a.dialogues or (60 if a.quick else 300)
    tmp = Path(tempfile.mkdtemp(prefix="emoforge-bench-train-"))
    try:
        run(a, tmp, samples, n_eval, n_dlg)
    finally:  # also on SIGTERM (SystemExit 143) and Ctrl-C
        shutil.rmtree(tmp, ignore_errors=True)


def run(a: argparse.Namespace, tmp: Path, samples: int, n_eval: int, n_dlg: int) -> None:
    home = tmp / "home"
    from schemas.home import offline_env

    offline_env(home)
    from trainer.train import TrainConfig, train
    from warehouse.evaluation import ProbeOptions, evaluate_release
    from warehouse.importers import import_dailydialog

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    src = dd_subset(tmp / "dd", 1000 if a.quick else None, 300 if a.quick else None)
    import_dailydialog(home, src)
    timings["import_s"] = round(time.perf_counter() - t0, 1)
    releases = {"dailydialog": dailydialog_release(home, n_dlg), "generated": generated_release(home, n_dlg)}
    timings["publish_s"] = round(time.perf_counter() - t0 - timings["import_s"], 1)
    out: dict = {"bench": "train", "quick": a.quick, "samples": samples, "eval_utterances": n_eval,
                 "dialogues_per_release": n_dlg, "releases": releases, "probe": {}, "llm": {}}
    for name, version in releases.items():
        t = time.perf_counter()
        ev = evaluate_release(home, version, ProbeOptions(sets=("dailydialog",)))
        s = ev["sets"]["dailydialog_test"]
        out["probe"][name] = {k: s["probe"][k] for k in ("weighted_f1", "macro_f1")}
        out["ceiling"] = {k: s["ceiling"][k] for k in ("weighted_f1", "macro_f1")}
        out["majority"] = {k: s["majority"][k] for k in ("weighted_f1", "macro_f1")} | {"label": s["majority"]["label"]}
        out["dailydialog_test_n"] = s["n"]
        timings[f"evaluate_{name}_s"] = round(time.perf_counter() - t, 1)
        warm = evaluate_release(home, version, ProbeOptions(sets=("dailydialog",)), write=False)["timing"]
        out.setdefault("evaluate_warm", {})[name] = {"seconds": warm["seconds"], "utterances": warm["utterances_scored"],
                                                     "embedded_now": warm["embedded_now"]}
    # the LoRA is scored on the first n_eval utterances (whole dialogues, cap_dialogues): the probe, the ceiling and
    # the majority baseline (DailyDialog train's majority label) on exactly those utterances
    same = ProbeOptions(sets=("dailydialog",), max_test=n_eval)
    out["same_utterances"] = {"probe": {}}
    for name, version in releases.items():
        s = evaluate_release(home, version, same, write=False)["sets"]["dailydialog_test"]
        out["same_utterances"] |= {"n": s["n"], "ceiling": _fig(s["ceiling"]),
                                   "majority_dailydialog_train": _fig(s["majority"]) | {"label": s["majority"]["label"]}}
        out["same_utterances"]["probe"][name] = _fig(s["probe"])
    for name, version in ({} if a.probe_only else releases).items():
        t = time.perf_counter()
        cfg = TrainConfig(window=2, k=0, batch_size=8, max_length=256, max_train_samples=samples, max_eval=n_eval,
                          eval_sets=("dailydialog",), schedule="all:1")
        m = train(home, version, None, tmp / f"run-{name}", cfg, log=lambda msg: print(msg, file=sys.stderr))
        dd = m["final"]["dailydialog_test"]
        out["llm"][name] = _fig(dd) | {
            "n_eval": dd["n"], "predicted": dd["predicted"],
            "majority_training_release": _fig(dd["majority"]) | {"label": dd["majority"]["label"]},
            "n_train": m["n_train"], "samples_per_s": round(m["samples_per_s"], 3),
            "eval_samples_per_s": round(dd["n"] / dd["seconds"], 3) if dd.get("seconds") else None,
            "peak_rss_mb": m["peak_rss_mb"], "gradient_checkpointing": m["model"]["gradient_checkpointing"]}
        if dd["n"] != out["same_utterances"]["n"]:
            raise SystemExit(f"the LoRA was scored on {dd['n']} utterances, the baselines on "
                             f"{out['same_utterances']['n']}: not the same set")
        timings[f"train_{name}_s"] = round(time.perf_counter() - t, 1)
    out["timings"] = timings
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
