"""Micro-batches for training: length bucketing, and the full-logits reference loss.

Where CPU time and memory go (``python bench/train_machinery.py --profile``, SmolLM2-135M, fp32): activations
kept for the backward pass grow with batch x width (and the attention with width squared), so every padding token
costs as much as a real one. Batches cut from a shuffled order are padded to their longest prompt; cutting them
from samples of similar length (:func:`length_batches`) removes most of that padding. Each epoch still trains
every sample of the phase exactly once, in the phase's shuffled order at the scale of a pool of ``pool`` batches;
only which samples share a micro-batch changes.
"""

from __future__ import annotations

import random
from typing import Sequence


def plain_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive micro-batches of the order (the trainer's batching before length bucketing)."""
    return [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def length_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int, seed: str | int,
                   pool: int = 16) -> list[list[int]]:
    """Micro-batches of similar length: the order is cut into pools of ``pool * batch_size`` samples, each pool is
    sorted by length and cut into batches, and the pool's batches are shuffled (seeded) so that long and short
    batches alternate. ``pool`` 1 gives :func:`plain_batches` with each batch sorted."""
    if batch_size < 1 or pool < 1:
        raise ValueError(f"batch_size {batch_size} and pool {pool} must be >= 1")
    rng = random.Random(f"length-batches:{seed}")
    size = batch_size * pool
    batches: list[list[int]] = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start:start + size], key=lambda i: (lengths[i], i))
        cut = plain_batches(chunk, batch_size)
        rng.shuffle(cut)
        batches += cut
    return batches


def padding_share(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the token positions in these batches that are padding (batch x longest sample)."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / total if total else 0.0


def full_logits_loss(model, ids, mask, pos, answers: Sequence[Sequence[int]]):
    """Reference for :func:`trainer.train.answer_loss`: logits at every position and the model's own ``labels=``
    loss over the answer tokens (what a plain Hugging Face fine-tune computes). Left-padded inputs from
    ``trainer.train._collate``: every answer ends at the last position."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    labels = torch.full_like(ids, -100)
    for i, a in enumerate(answers):
        labels[i, ids.shape[1] - len(a):] = torch.tensor(list(a))
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                 labels=labels.to(device)).loss


def return_freed_memory_to_os(threshold: int = 1 << 16) -> bool:
    """Have glibc serve every allocation above ``threshold`` bytes with its own mapping, returned to the system on
    free. A training step allocates and frees activations of a few MB to tens of MB; glibc's default (a threshold
    that grows up to 32 MB) keeps those in its heap, so the resident size stays at the high-water mark of all
    fragments: measured on SmolLM2-135M with gradient checkpointing, batch 8 x 384, peak RSS 7.0 GB with the
    default and 1.5 GB with a 64 KiB threshold (``MALLOC_MMAP_THRESHOLD_=65536``, the same setting). False where
    there is no glibc (the call is skipped)."""
    import ctypes  # noqa: PLC0415 - only this helper needs it

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
