"""Prefect flow around the ERC trainer: build/load the retrieval library, then train through the curriculum.

Thin on purpose: the work is in :mod:`trainer` (plain, tested functions); the flow adds Prefect's run tracking,
logging and retries. The library task is cached by the library's own input fingerprint (it rebuilds only when the
release, the imported data, the mapping or the embedder change); training resumes finished phases from ``OUT``.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger, task

from trainer.data import open_release
from trainer.retrieval import EmbeddingCache, Embedder, LibraryOptions, build_library
from trainer.train import TrainConfig, train


@task(name="retrieval-library")
def library_task(home: str, release: str, cfg: TrainConfig) -> dict:
    lib = build_library(home, open_release(home, release),
                        LibraryOptions(mapping=cfg.mapping, sources=cfg.library_sources,
                                       max_per_source=cfg.library_max_per_source),
                        cache=EmbeddingCache(home, Embedder(cfg.embedder)))
    return {"fingerprint": lib.fingerprint, "entries": len(lib), "built": lib.built}


@task(name="curriculum-lora")
def train_task(home: str, release: str, base_model: str | None, out: str, cfg: TrainConfig) -> dict:
    logger = get_run_logger()
    return train(home, release, base_model, out, cfg, log=logger.info, progress=True)  # periodic log lines


@flow(name="emoforge-train")
def train_flow(home: str, release: str, base_model: str | None, out: str, cfg: TrainConfig | None = None) -> dict:
    cfg = cfg or TrainConfig()
    logger = get_run_logger()
    if cfg.k > 0:
        lib = library_task(home, release, cfg)
        logger.info("retrieval library %s: %d entries (%s)", lib["fingerprint"], lib["entries"],
                    "built" if lib["built"] else "cached")
    metrics = train_task(home, release, base_model, out, cfg)
    logger.info("final: %s", {k: round(v["weighted_f1"], 4) for k, v in metrics["final"].items()})
    return metrics


__all__ = ["train_flow", "asdict"]
