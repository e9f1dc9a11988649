"""Process-wide settings: the emoforge home and the offline switches for Prefect, Hugging Face and uv.

``offline_env`` must run before prefect/datasets are imported; the CLI and the test suite call it first.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DEFAULT_HOME_NAME = "emoforge-home"

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "UV_PYTHON_DOWNLOADS": "never",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "False",
}


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """``--home`` if given, else ``$EMOFORGE_HOME``, else ``./emoforge-home``."""
    chosen = home or os.environ.get("EMOFORGE_HOME") or (Path.cwd() / DEFAULT_HOME_NAME)
    return Path(chosen).expanduser().resolve()


def offline_env(home: Path | None = None) -> None:
    """Keep Prefect/HF caches inside the emoforge home and switch off their network calls (setdefault: a value
    the user exported wins)."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    base = home or resolve_home()
    os.environ.setdefault("PREFECT_HOME", str(base / ".prefect"))
    os.environ.setdefault("HF_HOME", str(base / ".cache" / "huggingface"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(base / ".cache" / "huggingface" / "datasets"))
    os.environ.setdefault("MPLCONFIGDIR", str(base / ".cache" / "matplotlib"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)  # GX logs every ephemeral context at INFO


def machine_cache_dir(name: str, override_env: str) -> Path:
    """A per-machine cache of derived model files (shared by every home): ``$<override_env>`` if set, else
    ``$XDG_CACHE_HOME/emoforge/<name>`` (``~/.cache/emoforge/<name>``)."""
    if os.environ.get(override_env):
        return Path(os.environ[override_env])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emoforge" / name


def code_version() -> str:
    """Package version plus the git commit of the checkout when there is one."""
    try:
        ver = version("emoforge")
    except PackageNotFoundError:
        ver = "0+unknown"
    head = Path(__file__).resolve().parent.parent / ".git"
    try:
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            ref = (head / ref[5:]).read_text().strip()
        return f"{ver}+g{ref[:10]}"
    except OSError:
        return ver
