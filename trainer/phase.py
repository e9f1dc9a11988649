"""One curriculum phase of the LoRA trainer: its optimiser, its epochs of length-bucketed micro-batches, the order
actually trained (``order.jsonl``) and the guarded optimiser steps. :func:`trainer.train.train` runs the phases,
evaluates, saves and resumes; this module trains one."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from schemas.config.train import TrainConfig
from trainer.batching import length_batches, padding_share, plain_batches
from trainer.curriculum import Phase, epoch_orders
from trainer.progress import TrainProgress
from trainer.step_guard import StepGuard


@dataclass
class PhaseRun:
    """What every phase of one training run shares."""

    model: Any
    cfg: TrainConfig
    train_enc: list  # trainer.train.Encoded, in the order of buckets
    lengths: list[int]
    buckets: list[int]
    pad_id: int
    loss_fn: Callable  # (model, batch, pad_id, device) -> loss tensor
    log: Callable[[str], None]
    progress: bool
    error: type[Exception]


def train_phase(run: PhaseRun, phase: Phase, pdir: Path) -> dict:
    """Train ``phase`` in place on ``run.model``; the phase's figures (no evaluation)."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415 - transformers is heavy and comes with the optional train extra

    cfg, model = run.cfg, run.model
    orders = epoch_orders(run.buckets, phase, cfg.seed)
    steps_per_epoch = math.ceil(len(orders[0]) / (cfg.batch_size * cfg.grad_accum))
    total_steps = steps_per_epoch * phase.epochs
    if cfg.max_steps_per_phase is not None:
        total_steps = min(total_steps, cfg.max_steps_per_phase)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    sched = get_linear_schedule_with_warmup(optim, warmup, total_steps)
    model.train()
    device = next(model.parameters()).device
    guard = StepGuard(run.log, run.error)
    step, seen, loss_sum, loss_n, losses, padded = 0, 0, 0.0, 0, [], []
    t0 = time.perf_counter()
    n_phase = min(sum(len(o) for o in orders), total_steps * cfg.batch_size * cfg.grad_accum)
    bar = TrainProgress(f"phase {phase.index} buckets {list(phase.buckets)}", n_phase, enabled=run.progress,
                        log=run.log)
    try:
        with open(pdir / "order.jsonl", "w") as order_log:
            for epoch, order in enumerate(orders):
                micro = (length_batches(order, run.lengths, cfg.batch_size, f"{cfg.seed}:{phase.index}:{epoch}")
                         if cfg.length_bucketing else plain_batches(order, cfg.batch_size))
                padded.append(padding_share(micro, run.lengths))
                for mi, idx in enumerate(micro):
                    if step >= total_steps:
                        break
                    batch = [run.train_enc[i] for i in idx]
                    for i in idx:
                        order_log.write(json.dumps({"epoch": epoch, "step": step, "id": run.train_enc[i].sample.id,
                                                    "bucket": run.buckets[i]}) + "\n")
                    loss = run.loss_fn(model, batch, run.pad_id, device)
                    (loss / cfg.grad_accum).backward()
                    value = float(loss.detach())
                    if guard.note_loss(value):
                        loss_sum += value
                        loss_n += 1
                    losses.append(round(value, 5) if math.isfinite(value) else None)
                    seen += len(batch)
                    if (mi + 1) % cfg.grad_accum == 0 or mi == len(micro) - 1:
                        guard.step(params, optim, sched)
                        step += 1
                    bar.advance(len(batch), loss_sum / max(loss_n, 1))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return {
        "phase": phase.index, "buckets": list(phase.buckets), "epochs": phase.epochs, "samples": seen,
        "steps": step, "skipped_steps": guard.skipped, "train_loss": loss_sum / max(loss_n, 1),
        "seconds": round(seconds, 3), "samples_per_s": seen / seconds if seconds else None, "lr": cfg.lr,
        "warmup_steps": warmup, "losses": losses,
        "padding_share": round(sum(padded) / len(padded), 4) if padded else None,
    }
