"""Benchmark of the ERC trainer on CPU: training samples/s through the curriculum, plus two measured ratios.

A small synthetic release is published in a temporary home; a tiny offline causal LM (trainer.tiny_model) is
trained through all curriculum phases. Then, in the same process on the same batches:

* ``answer_logits_speedup``: training step time with the full-sequence logits and HF's built-in loss divided by
  the trainer's answer-only logits (``logits_to_keep``), the baseline being what a plain ``labels=`` call costs;
* ``cached_scoring_speedup``: label scoring with one full pass per (sample, label) divided by the trainer's
  prompt-once key/value-cached scoring.

    python bench/train_machinery.py [--quick] [--base-model DIR]

Ends with one JSON line: samples_per_s, eval_samples_per_s, the ratios, sizes.
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
    ap.add_argument("--quick", action="store_true", help="a small run, under a minute on an idle 2-core machine")
    ap.add_argument("--base-model", help="local model folder (default: a tiny model built on the fly)")
    ap.add_argument("--dialogues", type=int, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="old vs new training path on SmolLM2-135M (or --base-model), each in its own process: "
                         "samples/s and peak RSS side by side (bench/train_profile.py)")
    ap.add_argument("--variants", help="--profile: comma list of variants to run (default all; the first one run is the ratios' "
                         "baseline when 'before' is not among them)")
    ap.add_argument("--samples", type=int, help="--profile: training samples per variant (default 16, quick 8)")
    a = ap.parse_args()
    n_dialogues = a.dialogues or (12 if a.quick else 80)

    tmp = Path(tempfile.mkdtemp(prefix="emoforge-bench-train-"))
    home = tmp / "home"
    from schemas.home import offline_env

    offline_env(home)

    from schemas.config import Config
    from flows.synthetic import load_synthetic
    from schemas.taxonomy import load_taxonomy
    from trainer.evaluate import score_labels, score_labels_full
    from trainer.batching import full_logits_loss
    from trainer.tiny_model import build_tiny_model
    from trainer.train import TrainConfig, _collate, answer_loss, load_base_model, train
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    load_synthetic(Warehouse(home), load_taxonomy("deepdialogue"), n_dialogues, seed=11)
    version = publish_release(home, Config.model_validate({"publish": {"sources": ["synthetic"]}}))["version"]
    if a.profile:
        from bench.train_profile import profile
        from trainer.base_model import default_base_model

        base = Path(a.base_model) if a.base_model else default_base_model(home, log=lambda m: print(m, file=sys.stderr))
        figures = profile(home, version, base, a.samples or (8 if a.quick else 16), lambda m: print(m, file=sys.stderr),
                          set(a.variants.split(",")) if a.variants else None)
        print(json.dumps({"bench": "train_profile", "quick": a.quick, "base_model": str(base), **figures}))
        shutil.rmtree(tmp, ignore_errors=True)
        return
    base = Path(a.base_model) if a.base_model else build_tiny_model(tmp / "tiny")
    cfg = TrainConfig(window=2 if a.quick else 5, k=1 if a.quick else 3, batch_size=8,
                      max_length=384 if a.quick else 1024, max_eval=8 if a.quick else 64,
                      max_steps_per_phase=2 if a.quick else None)
    t0 = time.perf_counter()
    metrics = train(home, version, base, tmp / "out", cfg, log=lambda m: print(m, file=sys.stderr), progress=False)
    wall = time.perf_counter() - t0
    n_eval = sum(v["n"] for p in metrics["phases"] for v in p["eval"].values())
    eval_s = sum(v["seconds"] for p in metrics["phases"] for v in p["eval"].values())

    # ratios on the same batches, same process
    from trainer.export import ExportOptions
    from trainer.train import Encoder, prepare

    prep = prepare(home, version, cfg, log=lambda m: None)
    model, tok, _ = load_base_model(base, qlora=False)
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=32, lora_alpha=128, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    enc = Encoder(tok, prep.labels, ExportOptions(window=cfg.window, k=cfg.k), cfg.max_length)
    items = [enc.encode(s) for s in prep.train[:32]]
    batches = [items[i:i + 8] for i in range(0, len(items), 8)]
    device = next(model.parameters()).device

    def full_loss(batch):
        ids, mask, pos, _, _ = _collate(batch, tok.pad_token_id)
        return full_logits_loss(model, ids, mask, pos, [e.answer for e in batch])

    def timed(fn) -> float:
        t = time.perf_counter()
        for b in batches:
            fn(b).backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    model.train()
    timed(lambda b: answer_loss(model, b, tok.pad_token_id, device))  # warm-up
    t_answer = timed(lambda b: answer_loss(model, b, tok.pad_token_id, device))
    t_full = timed(full_loss)
    model.eval()
    prompts = [e.prompt for e in items[:16]]
    t = time.perf_counter()
    score_labels(model, prompts, enc.label_ids, tok.pad_token_id, 8)
    t_cached = time.perf_counter() - t
    t = time.perf_counter()
    score_labels_full(model, prompts, enc.label_ids, tok.pad_token_id, 8)
    t_fullscore = time.perf_counter() - t
    print(json.dumps({
        "bench": "train", "quick": a.quick, "device": metrics["model"]["device"], "base_model": str(base),
        "n_train": metrics["n_train"], "phases": len(metrics["phases"]),
        "samples_per_s": round(metrics["samples_per_s"], 3),
        "eval_samples_per_s": round(n_eval / eval_s, 3) if eval_s else None,
        "answer_logits_speedup": round(t_full / t_answer, 3),
        "cached_scoring_speedup": round(t_fullscore / t_cached, 3),
        "final_weighted_f1": {k: round(v["weighted_f1"], 4) for k, v in metrics["final"].items()},
        "train_wall_s": round(wall, 1), "prompt_tokens_mean": round(sum(len(e.prompt) for e in items) / len(items), 1),
    }))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
