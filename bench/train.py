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
    python bench/train.py --prepare DIR [...]; python bench/train.py --from DIR [--base-model M.gguf] [--schedule prc]

The second form splits the run: ``--prepare`` does everything but the LLM training here (import, both releases, the
probe figures) and keeps DIR; ``--from DIR`` needs only the trainer's packages (torch, transformers, peft, pyarrow,
duckdb, pydantic), so DIR can travel to a GPU machine.

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
    from schemas.text import count_words
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    wh = Warehouse(home)
    rows = wh.query(
        "SELECT d.id, list(t.text ORDER BY t.idx) AS texts, list(t.label ORDER BY t.idx) AS labels "
        "FROM dialogues d JOIN turns t ON t.dialogue_id = d.id WHERE d.source = 'dailydialog' "
        "AND d.source_split = 'train' GROUP BY d.id ORDER BY d.id").to_pylist()
    # the release gate's bounds (3-10 turns, at most 40 words a turn) hold for generated data; keep DailyDialog
    # dialogues inside them
    rows = [r for r in rows if 3 <= len(r["texts"]) <= 10 and max(count_words(t) for t in r["texts"]) <= 40]
    rows = rows[:n_dialogues]
    dialogues, turns = [], []
    for r in rows:
        did = content_id("dlg", "dailydialog-train", r["id"])
        turns += [Turn(id=Turn.make_id(did, i), dialogue_id=did, idx=i, speaker="AB"[i % 2], model="human", text=t,
                       intended_emotion=DD_TO_ERC[lab], label=DD_TO_ERC[lab], n_words=count_words(t))
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
    ap.add_argument("--eval", type=int, help="DailyDialog test utterances the LLM is scored on (0: all)")
    ap.add_argument("--dialogues", type=int, help="dialogues per release")
    ap.add_argument("--dd-train", type=int, help="DailyDialog train dialogues imported (0: all; --quick: 1,000)")
    ap.add_argument("--dd-test", type=int, help="DailyDialog test dialogues imported (0: all; --quick: 300)")
    ap.add_argument("--probe-only", action="store_true", help="skip the LLM training: the evaluate probe only")
    ap.add_argument("--prepare", type=Path, metavar="DIR",
                    help="import, publish and probe into DIR (kept), then stop: a GPU machine can run --from DIR")
    ap.add_argument("--from", dest="prepared", type=Path, metavar="DIR",
                    help="train on the releases a --prepare run left in DIR (no import, build or probe here)")
    ap.add_argument("--base-model", help="Hugging Face folder or .gguf (default: the trainer's SmolLM2-135M)")
    ap.add_argument("--schedule", default="all:1",
                    help="curriculum phases ('all:1' one epoch over everything; 'prc': the PRC-Emo default)")
    ap.add_argument("--window", type=int, default=2, help="previous utterances in the prompt")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per sample")
    ap.add_argument("--eval-batch-size", type=int, default=8)
    ap.add_argument("--eval-last-phase", action="store_true", help="score DailyDialog test after the last phase only")
    ap.add_argument("--also-full", action="store_true",
                    help="also train on every training utterance of the DailyDialog release (run dailydialog_all)")
    a = ap.parse_args()
    # SIGTERM exits like Ctrl-C: the temporary home is removed and Prefect's ephemeral API server (a child process
    # stopped by an atexit hook) goes with it; the default SIGTERM left that server running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.prepared:
        prepared = json.loads((a.prepared / "prepared.json").read_text())
        out = train_releases(a, a.prepared, prepared)
        print(json.dumps(out))
        return
    samples = a.samples or (48 if a.quick else 400)
    n_eval = 96 if a.quick and a.eval is None else (a.eval if a.eval is not None else 600)
    n_dlg = a.dialogues or (60 if a.quick else 300)
    if a.prepare:
        a.prepare.mkdir(parents=True, exist_ok=False)
        out = prepare(a, a.prepare, n_eval, n_dlg) | {"samples": samples}
        (a.prepare / "prepared.json").write_text(json.dumps(out, indent=1))
        print(json.dumps(out))
        return
    tmp = Path(tempfile.mkdtemp(prefix="emoforge-bench-train-"))
    try:
        out = prepare(a, tmp, n_eval, n_dlg) | {"samples": samples}
        if not a.probe_only:
            out = train_releases(a, tmp, out)
        print(json.dumps(out))
    finally:  # also on SIGTERM (SystemExit 143) and Ctrl-C
        shutil.rmtree(tmp, ignore_errors=True)


def _count(flag: int | None, quick: bool, quick_n: int) -> int | None:
    if flag is not None:
        return flag or None
    return quick_n if quick else None


def prepare(a: argparse.Namespace, tmp: Path, n_eval: int, n_dlg: int) -> dict:
    """Import DailyDialog, publish both releases and score them with the probe (everything but the LLM)."""
    home = tmp / "home"
    from schemas.home import offline_env

    offline_env(home)
    from warehouse.evaluation import ProbeOptions, evaluate_release
    from warehouse.importers import import_dailydialog

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    src = dd_subset(tmp / "dd", _count(a.dd_train, a.quick, 1000), _count(a.dd_test, a.quick, 300))
    import_dailydialog(home, src)
    timings["import_s"] = round(time.perf_counter() - t0, 1)
    releases = {"dailydialog": dailydialog_release(home, n_dlg), "generated": generated_release(home, n_dlg)}
    timings["publish_s"] = round(time.perf_counter() - t0 - timings["import_s"], 1)
    out: dict = {"bench": "train", "quick": a.quick, "eval_utterances": n_eval or "all",
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
    same = ProbeOptions(sets=("dailydialog",), max_test=n_eval or None)
    out["same_utterances"] = {"probe": {}}
    for name, version in releases.items():
        s = evaluate_release(home, version, same, write=False)["sets"]["dailydialog_test"]
        out["same_utterances"] |= {"n": s["n"], "ceiling": _fig(s["ceiling"]),
                                   "majority_dailydialog_train": _fig(s["majority"]) | {"label": s["majority"]["label"]}}
        out["same_utterances"]["probe"][name] = _fig(s["probe"])
    out["timings"] = timings
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def train_releases(a: argparse.Namespace, tmp: Path, out: dict) -> dict:
    """LoRA on each release, scored on the DailyDialog test utterances the baselines were scored on."""
    home = tmp / "home"
    from schemas.home import offline_env

    offline_env(home)
    from trainer.train import TrainConfig, train
    from warehouse.releases import read_manifest, resolve_release

    t0 = time.perf_counter()
    n_eval = out["eval_utterances"]
    timings = out.setdefault("timings", {})
    # the same number of training samples from each release: the smaller release's train split caps both
    sizes = {name: read_manifest(resolve_release(home, v))["counts"]["splits"]["train"]["utterances"]
             for name, v in out["releases"].items()}
    samples = min([a.samples or out["samples"], *sizes.values()])
    out |= {"samples": samples, "train_split_utterances": sizes, "llm": {}, "schedule": a.schedule,
            "window": a.window, "max_length": a.max_length}
    runs = [(name, version, samples) for name, version in out["releases"].items()]
    if a.also_full:  # the DailyDialog release on every training utterance as well (first: it matters most)
        runs.insert(0, ("dailydialog_all", out["releases"]["dailydialog"], None))
    for name, version, cap in runs:
        t = time.perf_counter()
        cfg = TrainConfig(window=a.window, k=0, batch_size=8, max_length=a.max_length, max_train_samples=cap,
                          max_eval=None if n_eval == "all" else n_eval, eval_sets=("dailydialog",),
                          schedule=None if a.schedule == "prc" else a.schedule, eval_batch_size=a.eval_batch_size,
                          eval_every_phase=not a.eval_last_phase)
        m = train(home, version, a.base_model, tmp / f"run-{name}", cfg, log=lambda msg: print(msg, file=sys.stderr))
        dd = m["final"]["dailydialog_test"]
        out["llm"][name] = _fig(dd) | {
            "n_eval": dd["n"], "predicted": dd["predicted"],
            "majority_training_release": _fig(dd["majority"]) | {"label": dd["majority"]["label"]},
            "phases": [{"samples": p["samples"], "loss": round(p["train_loss"], 4), "seconds": p["seconds"]}
                       | (_fig(p["eval"]["dailydialog_test"]) if p["eval"] else {}) for p in m["phases"]],
            "n_train": m["n_train"], "samples_per_s": round(m["samples_per_s"], 3), "device": m["model"]["device"],
            "eval_samples_per_s": round(dd["n"] / dd["seconds"], 3) if dd.get("seconds") else None,
            "peak_rss_mb": m["peak_rss_mb"], "gradient_checkpointing": m["model"]["gradient_checkpointing"]}
        if dd["n"] != out["same_utterances"]["n"]:
            raise SystemExit(f"the LoRA was scored on {dd['n']} utterances, the baselines on "
                             f"{out['same_utterances']['n']}: not the same set")
        timings[f"train_{name}_s"] = round(time.perf_counter() - t, 1)
    out["train_wall_s"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    main()
