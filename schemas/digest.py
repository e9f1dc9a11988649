"""The one file checksum: sha256 of a file's bytes (``hashlib.file_digest``), as release manifests, import
fingerprints, audio clips and joined model files record it."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
