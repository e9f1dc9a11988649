"""The home remembers: the release-defining settings a home was built with, kept in ``<home>/home.json``.

A home holds dialogues of one taxonomy (their emotions, the ``label_*`` mappings of its releases, the choices the
review project offers) made under one word cap. ``emoforge build`` records them the first time it runs in a home;
``publish``, ``review push`` and ``report`` (and later builds) take them from the home, so a home built with
``taxonomy: erc`` publishes with no flag and its review offers Disgusted. A flag or config key that asks for a
different value is refused with an error naming both values; the same value is fine.

Homes made before ``home.json`` existed: the taxonomy is read from the generated/template dialogues already
stored (when they agree on one), and written down by the next build.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from schemas.config import Config, ConfigError
from schemas.taxonomy import PRESETS, TaxonomyError, load_taxonomy
from warehouse.importers.labels import LABEL_SETS
from warehouse.store import Warehouse

HOME_FILE = "home.json"
FORMAT = 1


class HomeSettingsConflict(ConfigError):
    """A flag or config value contradicts what the home was built with."""


def read_settings(home: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(home) / HOME_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable home settings ({exc}); fix or remove the file") from None
    if not isinstance(data, dict) or "taxonomy" not in data:
        raise ConfigError(f"{path}: not emoforge home settings (no 'taxonomy'); fix or remove the file")
    return data


def infer_settings(home: str | os.PathLike) -> dict[str, Any] | None:
    """The taxonomy of a home without ``home.json``: the one its generated/template dialogues name, if exactly one."""
    wh = Warehouse(home)
    if "dialogues" not in wh.tables():
        return None
    imported = ", ".join(f"'{s}'" for s in LABEL_SETS)
    rows = wh.query(f"SELECT DISTINCT taxonomy FROM dialogues WHERE source NOT IN ({imported}) "
                    "AND taxonomy IS NOT NULL AND taxonomy <> ''").to_pylist()
    specs: dict[str, str] = {}  # fingerprint -> a loadable spec (records store a preset's name or fingerprint)
    for name in sorted({r["taxonomy"] for r in rows}):
        try:
            tax = load_taxonomy(name)
        except TaxonomyError:
            return None  # a taxonomy file that is not at hand: nothing to infer from
        preset = tax.name if tax.name in PRESETS and load_taxonomy(tax.name).fingerprint == tax.fingerprint else None
        specs.setdefault(tax.fingerprint, preset or name)
    return {"taxonomy": next(iter(specs.values())), "inferred": True} if len(specs) == 1 else None


def settings_of(cfg: Config) -> dict[str, Any]:
    tax = load_taxonomy(cfg.taxonomy)
    return {"format": FORMAT, "taxonomy": cfg.taxonomy, "taxonomy_name": tax.name,
            "taxonomy_fingerprint": tax.fingerprint, "mappings": sorted(tax.mappings),
            "word_cap": cfg.generation.word_cap}


def _same_taxonomy(a: str, b: str) -> bool:
    return a == b or load_taxonomy(a).fingerprint == load_taxonomy(b).fingerprint


def resolve_config(home: str | os.PathLike, cfg: Config, origin: str = "this command") -> Config:
    """``cfg`` with the home's remembered settings where ``cfg`` does not set them explicitly; an explicit value that
    differs is refused (:class:`HomeSettingsConflict`, naming both values)."""
    stored = read_settings(home) or infer_settings(home)
    if not stored:
        return cfg
    update: dict[str, Any] = {}
    if "taxonomy" in cfg.model_fields_set:
        if not _same_taxonomy(cfg.taxonomy, stored["taxonomy"]):
            raise HomeSettingsConflict(
                f"the home {Path(home)} was built with taxonomy {stored['taxonomy']!r}, but {origin} asks for "
                f"taxonomy {cfg.taxonomy!r}; a home holds one taxonomy: drop --taxonomy (or the config's "
                "'taxonomy:') to use the home's, or use another --home")
    else:
        update["taxonomy"] = stored["taxonomy"]
    cap = stored.get("word_cap")
    if cap is not None:
        explicit = "generation" in cfg.model_fields_set and "word_cap" in cfg.generation.model_fields_set
        if explicit and cfg.generation.word_cap != cap:
            raise HomeSettingsConflict(
                f"the home {Path(home)} was built with generation.word_cap {cap}, but {origin} asks for "
                f"word_cap {cfg.generation.word_cap}; drop the setting to use the home's, or use another --home")
        if not explicit:
            update["generation"] = cfg.generation.model_copy(update={"word_cap": cap})
    if not update:
        return cfg
    return cfg.model_copy(update=update)  # model_copy counts the updated keys as set: copies passed on keep them


def remember(home: str | os.PathLike, cfg: Config, origin: str = "this build") -> Config:
    """Resolve ``cfg`` against the home (:func:`resolve_config`) and write ``home.json`` if the home has none yet."""
    out = resolve_config(home, cfg, origin)
    path = Path(home) / HOME_FILE
    if not path.is_file():
        tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(settings_of(out), indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return out


__all__ = ["HOME_FILE", "HomeSettingsConflict", "infer_settings", "read_settings", "remember", "resolve_config",
           "settings_of"]
