"""The CPU default for gradient checkpointing: chosen from the estimated activation memory vs the memory available."""

from __future__ import annotations

from types import SimpleNamespace

from trainer.memory import SHARE, activation_bytes, available_bytes, choose_checkpointing

SMOLLM2 = SimpleNamespace(num_hidden_layers=30, hidden_size=576, intermediate_size=1536)


def test_the_estimate_reproduces_the_measured_smollm2_figure_and_scales_with_the_batch() -> None:
    # measured: about 2.5 MB per token position (bench/train_machinery.py --profile)
    assert activation_bytes(SMOLLM2, 1, 1) == 2_500_000
    assert activation_bytes(SMOLLM2, 8, 384) == 8 * 384 * 2_500_000
    tiny = SimpleNamespace(num_hidden_layers=2, hidden_size=64, intermediate_size=128)
    assert activation_bytes(tiny, 8, 384) < activation_bytes(SMOLLM2, 8, 384) / 100


def test_checkpointing_only_when_the_activations_would_not_fit_comfortably() -> None:
    need = activation_bytes(SMOLLM2, 8, 384)  # ~7.7 GB
    on, why = choose_checkpointing(SMOLLM2, 8, 384, available=int(need / SHARE) - 1)
    assert on and why["activation_estimate_mb"] == round(need / 2**20)
    off, why = choose_checkpointing(SMOLLM2, 8, 384, available=int(need / SHARE) + 2**20)
    assert not off and why["available_mb"] > why["activation_estimate_mb"]
    assert not choose_checkpointing(SMOLLM2, 2, 128, available=8 * 2**30)[0]  # 0.6 GB of 8 GB: speed
    assert choose_checkpointing(SMOLLM2, 2, 128, available=None)[0]  # unknown memory: the safe side


def test_available_memory_is_read_from_meminfo(tmp_path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   13000000 kB\n")
    assert available_bytes(f) == 13_000_000 * 1024
    f.write_text("MemTotal:       24000000 kB\n")
    assert available_bytes(f) is None
    assert available_bytes(tmp_path / "missing") is None
    assert available_bytes() is None or available_bytes() > 0
