"""Where CPU time and memory go in one training phase, old path and new path side by side on the same samples.

Run by ``python bench/train_machinery.py --profile [--quick] [--base-model DIR]`` (default base model:
SmolLM2-135M-Instruct, de-quantised into the bench's temporary home). Every variant trains the same encoded samples
of a synthetic release (window 5, no demonstrations, up to 384 tokens, batch 8) for one pass with AdamW, each in
its own fresh process so that its peak resident memory (``ru_maxrss``) is its own:

* ``before``: batches cut from the shuffled order, logits at every position and the model's ``labels=`` loss
  (what the trainer did when the issue measured 12.8 GB and 0.34 samples/s);
* ``answer_only``: the same batches, logits only at the answer positions (:func:`trainer.train.answer_loss`);
* ``bucketed``: answer-only logits on length-bucketed batches (:func:`trainer.batching.length_batches`);
* ``bucketed_checkpointing``: the same with gradient checkpointing (activations recomputed in the backward pass);
* ``bucketed_checkpointing_mmap``: the same with glibc returning freed activations to the system
  (:func:`trainer.batching.return_freed_memory_to_os`): the trainer's CPU path;
* ``bucketed_mmap``: answer-only, bucketed, glibc returning freed memory, *without* checkpointing;
* ``bucketed_micro2``: bucketed micro-batches of 2 with 4 accumulated per optimiser step (``--batch-size 2
  --grad-accum 4``: the same 8 samples per step; the mean is per micro-batch, so not bit-identical).

``before`` and ``answer_only`` see identical batches and dropout masks, so their per-batch losses must agree
(``loss_max_abs_diff``).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import resource
import time
from pathlib import Path

VARIANTS = {
    "before": {"full_logits": True, "bucketed": False, "checkpointing": False},
    "answer_only": {"full_logits": False, "bucketed": False, "checkpointing": False},
    "bucketed": {"full_logits": False, "bucketed": True, "checkpointing": False},
    "bucketed_checkpointing": {"full_logits": False, "bucketed": True, "checkpointing": True},
    "bucketed_checkpointing_mmap": {"full_logits": False, "bucketed": True, "checkpointing": True, "mmap": True},
    "bucketed_mmap": {"full_logits": False, "bucketed": True, "checkpointing": False, "mmap": True},
    "bucketed_micro2": {"full_logits": False, "bucketed": True, "checkpointing": False, "micro": 2},
}


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(base: str, items: list[tuple[list[int], list[int]]], batches: list[list[int]], opts: dict,
           pad_id: int, queue) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.batching import full_logits_loss, return_freed_memory_to_os
    from trainer.train import Encoded, _collate, answer_loss

    if opts.get("mmap"):
        return_freed_memory_to_os()
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
    if opts["checkpointing"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=32, lora_alpha=128, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=3e-4)
    enc = [Encoded(None, p, a) for p, a in items]
    loaded_mb = _rss_mb()
    losses, tokens, width_tokens = [], 0, 0
    accum = opts.get("accum", 1)
    t0 = time.perf_counter()
    for n, idx in enumerate(batches):
        batch = [enc[i] for i in idx]
        if opts["full_logits"]:
            ids, mask, pos, _, _ = _collate(batch, pad_id)
            loss = full_logits_loss(model, ids, mask, pos, [e.answer for e in batch])
        else:
            loss = answer_loss(model, batch, pad_id, "cpu")
        (loss / accum).backward()
        if (n + 1) % accum == 0 or n == len(batches) - 1:
            optim.step()
            optim.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        lengths = [len(e.prompt) + len(e.answer) for e in batch]
        tokens += sum(lengths)
        width_tokens += len(batch) * max(lengths)
    seconds = time.perf_counter() - t0
    queue.put({"samples_per_s": round(len(enc) / seconds, 4), "seconds": round(seconds, 1),
               "peak_rss_mb": _rss_mb(), "rss_after_load_mb": loaded_mb, "losses": losses,
               "padding_share": round(1 - tokens / width_tokens, 4), "threads": torch.get_num_threads()})


def run_variant(base: str, items, batches, opts: dict, pad_id: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(base, items, batches, opts, pad_id, queue))
    proc.start()
    try:
        result = queue.get(timeout=3600)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    return result


def profile(home: Path, version: str, base: Path, n_samples: int, log, only: set[str] | None = None) -> dict:
    """Run every variant on the same ``n_samples`` training samples; the figures of one JSON object."""
    from transformers import AutoTokenizer

    from trainer.batching import length_batches, padding_share, plain_batches
    from trainer.export import ExportOptions
    from trainer.train import Encoder, TrainConfig, prepare

    cfg = TrainConfig(window=5, k=0, batch_size=8, max_length=384, max_eval=8)
    prep = prepare(home, version, cfg, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    enc = Encoder(tok, prep.labels, ExportOptions(window=cfg.window, k=cfg.k), cfg.max_length)
    samples = list(prep.train)
    random.Random(0).shuffle(samples)  # as one epoch of a phase sees them
    items = [(e.prompt, e.answer) for e in (enc.encode(s) for s in samples[:n_samples])]
    order = list(range(len(items)))
    lengths = [len(p) + len(a) for p, a in items]
    # padding over a whole epoch of the release's train split: what bucketing saves at a realistic size
    all_lengths = [len(e.prompt) + len(e.answer) for e in (enc.encode(s) for s in samples)]
    epoch = list(range(len(all_lengths)))
    padding = {"plain": round(padding_share(plain_batches(epoch, cfg.batch_size), all_lengths), 4),
               "bucketed": round(padding_share(length_batches(epoch, all_lengths, cfg.batch_size, "p"), all_lengths), 4),
               "samples": len(all_lengths)}
    results = {}
    for name, opts in VARIANTS.items():
        if only and name not in only:
            continue
        if name == "bucketed" and len(items) <= cfg.batch_size:
            continue  # one batch: the same batch as answer_only
        micro = opts.get("micro", cfg.batch_size)
        batches = (length_batches(order, lengths, micro, "profile") if opts["bucketed"]
                   else plain_batches(order, micro))
        opts = opts | {"accum": cfg.batch_size // micro}
        log(f"profile: {name} on {len(items)} samples ...")
        r = run_variant(str(base), items, batches, opts, tok.pad_token_id)
        log(f"profile: {name}: {r['samples_per_s']} samples/s, peak RSS {r['peak_rss_mb']} MB")
        results[name] = r
    diff = (max(abs(a - b) for a, b in zip(results["before"]["losses"], results["answer_only"]["losses"]))
            if "before" in results and "answer_only" in results else None)
    before = results.get("before") or next(iter(results.values()))  # the ratios' baseline: "before" when run
    return {
        "n_samples": len(items), "batch_size": cfg.batch_size, "max_length": cfg.max_length,
        "tokens_mean": round(sum(lengths) / len(lengths), 1), "tokens_max": max(lengths),
        "loss_max_abs_diff": None if diff is None else round(diff, 6), "epoch_padding_share": padding,
        "baseline": next(k for k, v in results.items() if v is before),
        "variants": {k: {x: v[x] for x in ("samples_per_s", "seconds", "peak_rss_mb", "rss_after_load_mb",
                                           "padding_share")} for k, v in results.items()},
        "speedup_vs_before": {k: round(v["samples_per_s"] / before["samples_per_s"], 3) for k, v in results.items()},
        "rss_ratio_vs_before": {k: round(v["peak_rss_mb"] / before["peak_rss_mb"], 3) for k, v in results.items()},
    }
