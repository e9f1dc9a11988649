"""Gradient checkpointing on CPU, chosen from the estimated activation memory against the memory available.

Measured on SmolLM2-135M-Instruct in fp32 (``python bench/train_machinery.py --profile``, docs/benchmarks.md): a
training step keeps about 2.5 MB of activations per token position for the backward pass (30 layers, hidden 576,
MLP 1,536). Checkpointing recomputes them instead (peak RSS 1.5 GB instead of ~10 GB for batch 8 x 384) at about
half the samples/s. So checkpointing pays only when the activations would not fit comfortably: the trainer turns it
on when the estimate for the largest micro-batch exceeds ``SHARE`` of the memory the system has available
(``MemAvailable``), and leaves it off otherwise; ``--gradient-checkpointing`` / ``--no-gradient-checkpointing``
force either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# SmolLM2-135M: ~2.5 MB per position over 30 layers of (hidden 576 + MLP 1,536) -> bytes per position and unit
_BYTES_PER_UNIT = 2.5e6 / (30 * (576 + 1536))
SHARE = 0.5  # of MemAvailable: the rest stays for the model, the optimiser, the evaluation and the neighbours


def activation_bytes(config: Any, batch_size: int, width: int) -> int:
    """Estimated activation memory of one training micro-batch of ``batch_size`` x ``width`` token positions."""
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    return int(_BYTES_PER_UNIT * layers * (hidden + inter) * batch_size * width)


def available_bytes(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """The system's ``MemAvailable`` in bytes, None where it cannot be read (not Linux)."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def choose_checkpointing(config: Any, batch_size: int, width: int, available: int | None) -> tuple[bool, dict]:
    """(checkpoint?, the figures that decided): on when the estimate exceeds ``SHARE`` of ``available`` (or when the
    available memory is unknown: the safe side)."""
    need = activation_bytes(config, batch_size, width)
    on = available is None or need > SHARE * available
    return on, {"activation_estimate_mb": round(need / 2**20), "available_mb": None if available is None else
                round(available / 2**20), "share": SHARE, "batch_size": batch_size, "width": width}
