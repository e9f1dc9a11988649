"""Curriculum LoRA fine-tuning of a causal LM for ERC (PRC-Emo), from a published release.

``train(home, version, base_model, out, cfg)``:

1. reads the release (checksums verified), builds one sample per utterance (:mod:`trainer.export`), attaches k
   retrieved demonstrations from the retrieval library (:mod:`trainer.retrieval`, cached per input fingerprint);
2. orders training by the curriculum (:mod:`trainer.curriculum`): each phase its buckets, its epochs, a fresh
   AdamW and a fresh linear schedule with warm-up;
3. trains LoRA adapters (r=32, alpha=128, dropout 0.05, every linear layer; lr 3e-4; 3 % warm-up) with the loss on
   the answer tokens only; 4-bit QLoRA (NF4, double quantisation, bf16 compute) when a CUDA GPU and bitsandbytes are
   present, bf16 LoRA on a GPU without bitsandbytes, fp32 LoRA on CPU;
4. after every phase evaluates weighted-F1 and accuracy on the release's test split and on every imported real
   test set that maps onto the label mapping, and saves the phase's adapter.

Output folder::

    OUT/adapter_config.json, adapter_model.safetensors   final adapter (PEFT)
    OUT/metrics.json                                     per phase and per test set; updated after every phase
    OUT/phases/phase-<n>/order.jsonl                     the samples in the order they were trained (with bucket)
    OUT/phases/phase-<n>/adapter/                        the adapter after phase n
    OUT/phases/phase-<n>/predictions-<set>.jsonl         gold and predicted label per test sample
    OUT/phases/phase-<n>/done.json                       phase metrics; a re-run skips finished phases

A killed run resumes at the first unfinished phase (that phase starts over); a folder holding a run with other
settings is refused.
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from schemas.config.train import TrainConfig
from trainer.base_model import default_base_model
from trainer.batching import return_freed_memory_to_os
from trainer.curriculum import Phase, default_schedule, parse_schedule, rebucket
from trainer.data import (
    TrainerDataError, cap_dialogues, imported_sources, imported_utterances, majority_label, open_release,
    release_utterances, supports_mapping,
)
from trainer.evaluate import classification_metrics, score_labels
from trainer.export import ErcSample, ExportOptions, attach_demonstrations, make_samples
from trainer.memory import available_bytes, choose_checkpointing
from trainer.phase import PhaseRun, train_phase
from trainer.progress import TrainProgress
from trainer.retrieval import EmbeddingCache, Embedder, LibraryOptions, build_library


class TrainError(RuntimeError):
    pass


# ---- model ------------------------------------------------------------------------------------------------
def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401, PLC0415 - optional, GPU only
    except Exception:
        return False
    return True


def load_base_model(path: str | Path, qlora: bool | None = None, dtype: str = "float32"):
    """(model, tokenizer, info) from a local Hugging Face model folder or a GGUF file, never downloading."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - transformers is heavy and comes with the optional train extra

    p = Path(path).expanduser()
    if not p.exists():
        raise TrainError(f"base model {p} not found: pass a local Hugging Face model folder or a .gguf file "
                         f"(a tiny test model: `emoforge tiny-model DIR`)")
    kwargs: dict[str, Any] = {"local_files_only": True}
    folder = p
    if p.is_file():
        if p.suffix != ".gguf":
            raise TrainError(f"base model {p}: a file must be a .gguf model; otherwise pass the model folder")
        try:
            import gguf  # noqa: F401, PLC0415 - optional: only for GGUF base models
        except ImportError:
            raise TrainError("loading a GGUF base model needs the `gguf` package: `uv pip install gguf`") from None
        folder, kwargs["gguf_file"] = p.parent, p.name
    elif not (p / "config.json").is_file():
        raise TrainError(f"base model {p}: no config.json (not a Hugging Face model folder)")
    cuda = torch.cuda.is_available()
    use_qlora = (cuda and _has_bitsandbytes()) if qlora is None else qlora
    if use_qlora and not cuda:
        raise TrainError("QLoRA needs a CUDA GPU; none is visible (drop --qlora to train plain LoRA on CPU)")
    if use_qlora and not _has_bitsandbytes():
        raise TrainError("QLoRA needs bitsandbytes: `uv pip install bitsandbytes` (or pass --no-qlora)")
    tok = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    if use_qlora:
        from transformers import BitsAndBytesConfig  # noqa: PLC0415 - transformers is heavy and comes with the optional train extra

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": 0}
    elif cuda:
        kwargs["dtype"] = getattr(torch, dtype)
    else:
        kwargs["dtype"] = torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except OSError as exc:
        raise TrainError(f"base model {p} cannot be loaded offline: {exc}") from None
    if cuda and not use_qlora:
        model.to("cuda")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise TrainError(f"base model {p}: its tokenizer has no end-of-sequence token")
    info = {"path": str(p), "device": "cuda" if cuda else "cpu", "qlora": bool(use_qlora),
            "dtype": str(next(model.parameters()).dtype)}
    return model, tok, info


def _chat_prompt(tok, messages: list[dict[str, str]]) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


@dataclass
class Encoded:
    sample: ErcSample
    prompt: list[int]
    answer: list[int]
    truncated: bool = False
    window: int = 0
    k: int = 0


class Encoder:
    """Token ids of a sample's prompt and answer, fitted into ``max_length`` by showing fewer context turns, then
    fewer demonstrations, then cutting the prompt's start."""

    def __init__(self, tok, labels: list[str], opts: ExportOptions, max_length: int):
        self.tok, self.labels, self.opts, self.max_length = tok, labels, opts, max_length
        self.label_ids = [self.tok(lab, add_special_tokens=False).input_ids + [tok.eos_token_id] for lab in labels]
        self.answer_room = max(len(a) for a in self.label_ids)
        if self.max_length <= self.answer_room + 8:
            raise TrainError(f"max_length {max_length} leaves no room for a prompt")

    def encode(self, s: ErcSample) -> Encoded:
        answer = self.label_ids[self.labels.index(s.label)]
        budget = self.max_length - self.answer_room
        w, k = len(s.context), len(s.demos)
        tries = [(ww, k) for ww in range(w, 0, -1)] + [(min(w, 1), kk) for kk in range(k - 1, -1, -1)] + [(0, 0)]
        ids: list[int] = []
        for ww, kk in tries:
            msgs = s.messages(self.labels, self.opts, window=ww, k=kk)[:-1]
            ids = self.tok(_chat_prompt(self.tok, msgs), add_special_tokens=False).input_ids
            if len(ids) <= budget:
                return Encoded(s, ids, answer, False, ww, kk)
        return Encoded(s, ids[-budget:], answer, True, 0, 0)


# ---- data -------------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    labels: list[str]
    train: list[ErcSample]
    tests: dict[str, list[ErcSample]]
    library: dict | None
    buckets: list[int]
    schedule: list[Phase]
    n_buckets: int


def prepare(home: str | Path, version: str, cfg: TrainConfig, log: Callable[[str], None] = print) -> Prepared:
    release = open_release(home, version)
    labels = release.labels(cfg.mapping)
    opts = ExportOptions(mapping=cfg.mapping, window=cfg.window, future=cfg.future, k=cfg.k, max_chars=cfg.max_chars)
    train_utts = cap_dialogues(release_utterances(release, cfg.mapping, ("train",)), cfg.max_train_samples)
    test_utts = cap_dialogues(release_utterances(release, cfg.mapping, ("test",)), cfg.max_eval)
    if not train_utts:
        raise TrainerDataError(f"release {version} has no training utterances")
    train = make_samples(train_utts, opts)
    tests = {"release_test": make_samples(test_utts, opts)} if test_utts else {}
    available = imported_sources(home)
    wanted = cfg.eval_sets if cfg.eval_sets is not None else tuple(
        s for s in sorted(available) if "test" in available[s] and supports_mapping(s, cfg.mapping))
    for src in wanted:
        utts = cap_dialogues(imported_utterances(home, src, "test", cfg.mapping), cfg.max_eval)
        bad = sorted({u.label for u in utts} - set(labels))
        if bad:
            raise TrainerDataError(f"{src} test labels {bad} are not in the {cfg.mapping!r} label list {labels}")
        tests[f"{src}_test"] = make_samples(utts, opts)
    if not tests:
        raise TrainerDataError(f"release {version} has no test split and no imported real test set maps onto "
                               f"{cfg.mapping!r}: nothing to evaluate on")
    library_info = None
    if cfg.k > 0:
        cache = EmbeddingCache(home, Embedder(cfg.embedder))
        lib = build_library(home, release, LibraryOptions(mapping=cfg.mapping, sources=cfg.library_sources,
                                                          max_per_source=cfg.library_max_per_source), cache=cache)
        log(f"retrieval library {lib.fingerprint}: {len(lib)} entries {lib.meta['by_source']} "
            f"({'built' if lib.built else 'cached'})")
        for group in [train, *tests.values()]:
            attach_demonstrations(group, lib, cache, cfg.k)
        library_info = {"fingerprint": lib.fingerprint, "entries": len(lib), "by_source": lib.meta["by_source"],
                        "built": lib.built, "dir": str(lib.dir)}
    # buckets
    if cfg.buckets is None or cfg.buckets == release.n_buckets:
        n_buckets = release.n_buckets
        buckets = [int(s.bucket) for s in train]
    else:
        n_buckets = cfg.buckets
        dif = {s.dialogue_id: float(s.difficulty) for s in train}
        mapping = rebucket(dif, sorted(dif), n_buckets)
        buckets = [mapping[s.dialogue_id] for s in train]
    schedule = parse_schedule(cfg.schedule, n_buckets) if cfg.schedule else default_schedule(n_buckets, cfg.epochs)
    return Prepared(labels, train, tests, library_info, buckets, schedule, n_buckets)


# ---- training ---------------------------------------------------------------------------------------------
def _collate(batch: list[Encoded], pad_id: int):
    """Left-padded ids, mask, position ids, and the answer targets aligned with the last ``keep`` logits: every
    answer ends at the last position, so only ``keep`` = longest answer + 1 positions need logits."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    width = max(len(e.prompt) + len(e.answer) for e in batch)
    keep = max(len(e.answer) for e in batch) + 1
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), keep), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        seq = e.prompt + e.answer
        ids[i, width - len(seq):] = torch.tensor(seq)
        mask[i, width - len(seq):] = 1
        n = len(e.answer)
        targets[i, keep - n - 1:keep - 1] = torch.tensor(e.answer)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos, targets, keep


def answer_loss(model, batch: list[Encoded], pad_id: int, device):
    """Mean cross-entropy over the answer tokens (the prompt is context only)."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    ids, mask, pos, targets, keep = _collate(batch, pad_id)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                logits_to_keep=keep)
    logits = out.logits.float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.to(device).reshape(-1),
                                             ignore_index=-100)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _score_sorted(model, enc: Encoder, items: list[Encoded], pad_id: int, batch_size: int,
                  bar: TrainProgress) -> list[int]:
    """Label index per item; prompts are scored in order of length (less padding), in chunks for progress."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt))
    best: list[int] = [0] * len(items)
    chunk = batch_size * 4
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        scores = score_labels(model, [items[i].prompt for i in idx], enc.label_ids, pad_id, batch_size)
        for i, b in zip(idx, scores.argmax(dim=1).tolist()):
            best[i] = b
        bar.advance(len(idx))
    return best


def _baseline(gold: list[str], label: str, labels: list[str]) -> dict:
    """The majority-class baseline on the same utterances: always ``label``."""
    m = classification_metrics(gold, [label] * len(gold), labels)
    return {"label": label, **{k: m[k] for k in ("accuracy", "weighted_f1", "macro_f1")}}


def evaluate_sets(model, enc: Encoder, tests: dict[str, list[Encoded]], pad_id: int, batch_size: int,
                  out_dir: Path | None = None, progress: bool = False,
                  log: Callable[[str], None] = print, majority: str | None = None) -> dict[str, dict]:
    """Scores per test set; with ``majority`` (the training data's most frequent label) each set also gets the
    majority-class baseline on exactly its utterances (``majority``), and a model that answers one label for every
    utterance is logged as such."""
    was_training = model.training
    model.eval()
    results = {}
    for name, items in tests.items():
        t0 = time.perf_counter()
        bar = TrainProgress(f"evaluating on {name}", len(items), enabled=progress, log=log)
        try:
            pred = [enc.labels[i] for i in _score_sorted(model, enc, items, pad_id, batch_size, bar)]
        finally:
            bar.close()
        gold = [e.sample.label for e in items]
        m = classification_metrics(gold, pred, enc.labels)
        m["seconds"] = round(time.perf_counter() - t0, 3)
        if majority is not None:
            m["majority"] = _baseline(gold, majority, enc.labels)
        if len(m["predicted"]) == 1 and len(items) > 1:
            log(f"{name}: the model answers {pred[0]!r} for all {len(items)} utterances (a constant predictor: "
                f"too few training steps, or a collapsed adapter)")
        results[name] = m
        if out_dir is not None:
            lines = "".join(json.dumps({"id": e.sample.id, "gold": g, "pred": p}) + "\n" for e, g, p in zip(items, gold, pred))
            (out_dir / f"predictions-{name}.jsonl").write_text(lines)
    if was_training:
        model.train()
    return results


def _attach_lora(model, info: dict, cfg: TrainConfig, longest: int):
    """The model with its LoRA adapter, gradient checkpointing chosen (recorded in ``info``)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: PLC0415 - peft comes with the optional train extra (imports torch)

    # on CPU the kept activations are most of the memory (bench/train_machinery.py --profile): checkpointing when
    # they would not fit comfortably (trainer.memory), always with QLoRA, never on a plain GPU unless forced
    if cfg.gradient_checkpointing is not None:
        info["gradient_checkpointing"] = cfg.gradient_checkpointing
    elif info["device"] == "cpu" and not info["qlora"]:
        info["gradient_checkpointing"], info["checkpointing_choice"] = choose_checkpointing(
            model.config, cfg.batch_size, longest, available_bytes())
    else:
        info["gradient_checkpointing"] = info["qlora"]
    if info["device"] == "cpu":
        info["malloc_mmap_threshold"] = return_freed_memory_to_os()
    if info["qlora"]:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=info["gradient_checkpointing"])
    elif info["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, lora)


def _refuse_other_run(metrics_path: Path, fp: str) -> None:
    """An output folder holding a run with other settings is not resumed (nor overwritten)."""
    if metrics_path.is_file():
        old = json.loads(metrics_path.read_text())
        if old.get("fingerprint") != fp:
            raise TrainError(f"{metrics_path.parent} holds a training run with other settings (release "
                             f"{old.get('release')}, base model {old.get('base_model')}); use another --out folder")


def _finished_phase(model, pdir: Path, fp: str) -> dict | None:
    """A phase this run finished before (same fingerprint, adapter on disk): its adapter loaded into ``model``, its
    metrics returned; None when the phase has to be trained."""
    from peft import set_peft_model_state_dict  # noqa: PLC0415 - peft comes with the optional train extra (imports torch)
    from safetensors.torch import load_file  # noqa: PLC0415 - safetensors.torch imports torch (optional train extra)

    done, weights = pdir / "done.json", pdir / "adapter" / "adapter_model.safetensors"
    if not (done.is_file() and weights.is_file()):
        return None
    record = json.loads(done.read_text())
    if record.get("fingerprint") != fp:
        return None
    set_peft_model_state_dict(model, load_file(str(weights)))
    return record["metrics"]


def train(home: str | Path, version: str, base_model: str | Path | None, out: str | Path,
          cfg: TrainConfig | None = None, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train on release ``version``; ``base_model`` None: SmolLM2-135M-Instruct (:mod:`trainer.base_model`)."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    cfg = cfg or TrainConfig()
    base_model = base_model or default_base_model(home, log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint(version, str(Path(base_model).expanduser().resolve()))
    metrics_path = out / "metrics.json"
    _refuse_other_run(metrics_path, fp)
    t_start = time.perf_counter()
    prep = prepare(home, version, cfg, log)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tok, info = load_base_model(base_model, cfg.qlora, cfg.dtype)
    opts = ExportOptions(mapping=cfg.mapping, window=cfg.window, future=cfg.future, k=cfg.k, max_chars=cfg.max_chars)
    enc = Encoder(tok, prep.labels, opts, cfg.max_length)
    train_enc = [enc.encode(s) for s in prep.train]
    lengths = [len(e.prompt) + len(e.answer) for e in train_enc]
    test_enc = {name: [enc.encode(s) for s in items] for name, items in prep.tests.items()}
    majority = majority_label(s.label for s in prep.train)
    n_trunc = sum(e.truncated for e in train_enc) + sum(e.truncated for v in test_enc.values() for e in v)
    model = _attach_lora(model, info, cfg, max(lengths))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    pad_id = tok.pad_token_id
    bucket_counts = {str(b): n for b, n in Counter(prep.buckets).items()}
    metrics: dict[str, Any] = {
        "fingerprint": fp, "release": version, "base_model": str(base_model), "mapping": cfg.mapping,
        "labels": prep.labels, "majority_label": majority, "config": cfg.model_dump(), "model": info,
        "parameters": {"trainable": trainable, "total": total}, "library": prep.library,
        "n_train": len(train_enc), "test_sets": {k: len(v) for k, v in test_enc.items()},
        "truncated_prompts": n_trunc, "buckets": bucket_counts, "n_buckets": prep.n_buckets,
        "schedule": [asdict(p) for p in prep.schedule], "phases": [], "complete": False,
    }
    log(f"training {len(train_enc)} samples ({bucket_counts} by bucket) on {info['device']}"
        f"{' with 4-bit QLoRA' if info['qlora'] else ''}; {trainable:,} of {total:,} parameters trainable; "
        + "; ".join(p.describe() for p in prep.schedule))
    run = PhaseRun(model=model, cfg=cfg, train_enc=train_enc, lengths=lengths, buckets=prep.buckets, pad_id=pad_id,
                   loss_fn=answer_loss, log=log, progress=progress, error=TrainError)
    train_seconds, train_samples = 0.0, 0
    for phase in prep.schedule:
        pdir = out / "phases" / f"phase-{phase.index}"
        done = pdir / "done.json"
        earlier = _finished_phase(model, pdir, fp)
        if earlier is not None:
            metrics["phases"].append(earlier)
            log(f"{phase.describe()}: done earlier, adapter reloaded")
            continue
        pdir.mkdir(parents=True, exist_ok=True)
        record = train_phase(run, phase, pdir)
        train_seconds += record["seconds"]
        train_samples += record["samples"]
        record["eval"] = (evaluate_sets(model, enc, test_enc, pad_id, cfg.eval_batch_size, pdir, progress=progress,
                                        log=log, majority=majority)
                          if cfg.eval_every_phase or phase is prep.schedule[-1] else {})
        record["peak_rss_mb"] = peak_rss_mb()
        model.save_pretrained(str(pdir / "adapter"))
        _write_json(done, {"fingerprint": fp, "metrics": record})
        metrics["phases"].append(record)
        _write_json(metrics_path, metrics)
        log(f"{phase.describe()}: loss {record['train_loss']:.4f}" + "".join(
            f", {k} weighted-F1 {v['weighted_f1']:.4f} acc {v['accuracy']:.4f}" for k, v in record["eval"].items()))
    model.save_pretrained(str(out))
    metrics["final"] = metrics["phases"][-1]["eval"]
    metrics["samples_per_s"] = train_samples / train_seconds if train_seconds else None
    metrics["seconds_total"] = round(time.perf_counter() - t_start, 3)
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics["adapter"] = str(out)
    metrics["complete"] = True
    _write_json(metrics_path, metrics)
    return metrics

