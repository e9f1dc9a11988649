"""Release version strings: semantic versions ``MAJOR.MINOR.PATCH``, nothing else."""

from __future__ import annotations

import re

_SEMVER = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$")


class VersionError(ValueError):
    pass


def parse_version(text: str) -> tuple[int, int, int]:
    if not isinstance(text, str) or not text.strip():
        raise VersionError("a release version is required (for example 1.2.0); got an empty string")
    m = _SEMVER.match(text.strip())
    if not m:
        raise VersionError(f"{text!r} is not a release version: expected MAJOR.MINOR.PATCH, for example 1.2.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check_version(text: str) -> str:
    parse_version(text)
    return text.strip()


def next_version(existing: list[str], bump: str = "minor") -> str:
    if not existing:
        return "0.1.0"
    major, minor, patch = max(parse_version(v) for v in existing)
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "patch":
        return f"{major}.{minor}.{patch + 1}"
    return f"{major}.{minor + 1}.0"


def sort_versions(versions: list[str]) -> list[str]:
    return sorted(versions, key=parse_version)
