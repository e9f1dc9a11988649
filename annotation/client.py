"""Connecting to Label Studio: the URL of the server started for the home (or ``--url`` / ``$EMOFORGE_LS_URL``) and
the API token from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from annotation.server import LabelStudioError, api_token, check_token, health, status


def server_url(home: Path, url: str | None = None) -> str:
    if url or os.environ.get("EMOFORGE_LS_URL"):
        return (url or os.environ["EMOFORGE_LS_URL"]).rstrip("/")
    st = status(home)
    if not st["running"]:
        raise LabelStudioError(
            "no Label Studio server runs for this home: start one with `emoforge labelstudio start` "
            "(or give --url / EMOFORGE_LS_URL for a server elsewhere)"
        )
    return st["url"]


def connect(home: Path, url: str | None = None, timeout: float = 120.0):
    """A ``label_studio_sdk.LabelStudio`` client for the server, after checking it answers and takes the token."""
    from label_studio_sdk import LabelStudio  # noqa: PLC0415 - heavy; only the review commands talk to Label Studio

    base = server_url(home, url)
    if not health(base):
        raise LabelStudioError(f"Label Studio at {base} does not answer /health")
    token = api_token()
    check_token(base, token)
    client = LabelStudio(base_url=base, api_key=token, timeout=timeout)
    client.emoforge_url = base  # type: ignore[attr-defined]
    return client
