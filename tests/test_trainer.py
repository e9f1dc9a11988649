"""End to end on a published release: ERC export, the retrieval library, curriculum LoRA training on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from test_import_meld import write_meld_fixture

SECTIONS = ["### Task", "### Explicit and implicit emotion", "### Conversation",
            "### Similar examples (retrieved from other conversations)", "### Labels"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    from schemas.config import Config
    from flows.synthetic import synthetic_dialogues
    from schemas.taxonomy import load_taxonomy
    from trainer.tiny_model import build_tiny_model
    from warehouse.importers import import_meld
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    root = tmp_path_factory.mktemp("trainer")
    home = root / "home"
    wh = Warehouse(home)
    dialogues, turns = [], []
    for d, ts in synthetic_dialogues(load_taxonomy("deepdialogue"), 24, seed=3):
        dialogues.append(d)
        turns += ts
    wh.upsert(turns)
    wh.upsert(dialogues)
    summary = publish_release(home, Config.model_validate({"publish": {"sources": ["synthetic"]}}))
    write_meld_fixture(root / "meld")
    import_meld(home, root / "meld")
    release_dir = Path(summary["path"])
    utts = {s: [row for f in sorted((release_dir / "data" / "utterances").glob(f"{s}*.parquet"))
                for row in pq.read_table(f).to_pylist()]
            for s in ("train", "validation", "test")}
    return SimpleNamespace(home=home, root=root, version=summary["version"], tiny=build_tiny_model(root / "tiny"),
                           utts=utts)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_is_deterministic_and_has_the_prc_emo_structure(world) -> None:
    from trainer.export import ExportOptions, export_erc

    opts = ExportOptions(mapping="erc7", window=2, k=2)
    info = export_erc(world.home, world.version, world.root / "exp1", opts)
    again = export_erc(world.home, world.version, world.root / "exp2", opts)
    assert info["library"]["built"] and not again["library"]["built"]  # the second export reuses the library
    for split in ("train", "validation", "test"):
        assert (world.root / "exp1" / f"{split}.jsonl").read_bytes() == (world.root / "exp2" / f"{split}.jsonl").read_bytes()
    labels = ["neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert info["labels"] == labels
    rows = _jsonl(world.root / "exp1" / "train.jsonl")
    src = {(u["dialogue_id"], u["utterance_idx"]): u for u in world.utts["train"]}
    assert len(rows) == len(src) == info["counts"]["train"]
    sources = set()
    for r in rows:
        u = src[(r["dialogue_id"], r["utterance_idx"])]
        assert r["label"] == u["label_erc7"] and r["bucket"] == u["bucket"]
        system, user, assistant = r["messages"]
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert assistant["content"] == r["label"]
        positions = [user["content"].index(s) for s in SECTIONS]
        assert positions == sorted(positions)
        assert f"Choose exactly one of: {', '.join(labels)}." in user["content"]
        assert f">>> [{r['utterance_idx'] + 1}] {r['speaker']}: " in user["content"]
        # window 2: the two previous utterances and no older one
        conv = user["content"].split("### Conversation\n")[1].split("\n\n")[0].splitlines()
        assert len(conv) == 1 + min(2, r["utterance_idx"])
        assert len(r["demonstrations"]) == 2
        for d in r["demonstrations"]:
            assert not d["id"].startswith(r["dialogue_id"] + ":")
            assert d["label"] in labels
            sources.add(d["source"])
        assert user["content"].count("Emotion of ") == 2
    assert sources <= {"release", "meld"} and "release" in sources
    assert set(info["library"]) >= {"fingerprint", "entries"}


def test_retrieval_never_same_dialogue_cached_and_rebuilt_on_change(world, tmp_path) -> None:
    from trainer.data import open_release
    from trainer.retrieval import EmbeddingCache, Embedder, LibraryOptions, build_library
    from warehouse.importers import import_meld

    release = open_release(world.home, world.version)
    embedder = Embedder()
    cache = EmbeddingCache(world.home, embedder)
    lib = build_library(world.home, release, LibraryOptions(mapping="erc7"), cache=cache)
    assert lib.meta["by_source"]["meld"] == 14 and lib.meta["by_source"]["release"] == len(world.utts["train"])
    same = build_library(world.home, release, LibraryOptions(mapping="erc7"), cache=EmbeddingCache(world.home, embedder))
    assert not same.built and same.fingerprint == lib.fingerprint and same.dir == lib.dir
    # every entry, asked for all neighbours: none from its own dialogue, all the others ranked by similarity
    vecs = lib.vectors
    dlgs = [e.dialogue_id for e in lib.entries]
    own = {d: dlgs.count(d) for d in dlgs}
    nbrs = lib.neighbours(vecs, dlgs, k=len(lib))
    for i, idx in enumerate(nbrs):
        assert all(lib.entries[j].dialogue_id != dlgs[i] for j in idx)
        assert len(idx) == len(lib) - own[dlgs[i]]
        sims = [float(vecs[i] @ vecs[j]) for j in idx]
        assert sims == sorted(sims, reverse=True)
    # an identical text in another dialogue is the nearest neighbour
    probe = lib.entries[0]
    hit = lib.neighbours(cache.get([probe.text]), ["some-other-dialogue"], k=1)[0][0]
    assert lib.entries[hit].text == probe.text
    # the inputs change (more imported training data): a new library; the old embeddings are reused
    extra = tmp_path / "extra_train.csv"
    extra.write_text("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
                     "1,I can't believe you did that!,Rachel,anger,negative,50,0\n"
                     "2,I'm sorry. I really am.,Ross,sadness,negative,50,1\n")
    import_meld(world.home, extra)
    counting = EmbeddingCache(world.home, embedder)
    new = build_library(world.home, release, LibraryOptions(mapping="erc7"), cache=counting)
    assert new.built and new.fingerprint != lib.fingerprint and new.meta["by_source"]["meld"] == 16
    assert counting.computed == 2  # only the two new texts were embedded
    only_release = build_library(world.home, release, LibraryOptions(mapping="erc7", sources=()), cache=counting)
    assert only_release.meta["by_source"] == {"release": len(world.utts["train"])}


def test_label_scoring_with_cache_matches_full_passes(world) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.evaluate import score_labels, score_labels_full

    tok = AutoTokenizer.from_pretrained(str(world.tiny), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(world.tiny), local_files_only=True).eval()
    labels = ["joy", "xylophonically", "anger management", "neutral"]
    label_ids = [tok(lab, add_special_tokens=False).input_ids + [tok.eos_token_id] for lab in labels]
    assert len({len(x) for x in label_ids}) > 1  # answers of different lengths
    prompts = [tok("how are you " * n, add_special_tokens=False).input_ids for n in (1, 4, 9)]
    cached = score_labels(model, prompts, label_ids, tok.pad_token_id, batch_size=2)
    full = score_labels_full(model, prompts, label_ids, tok.pad_token_id, batch_size=2)
    assert torch.allclose(cached, full, atol=1e-4)
    p, a = prompts[1], label_ids[1]  # and both equal an unpadded pass
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + a])).logits[0].float(), dim=-1)
    ref = sum(float(logp[len(p) - 1 + j, a[j]]) for j in range(len(a)))
    assert cached[1, 1].item() == pytest.approx(ref, abs=1e-4)


def test_train_through_all_phases_on_cpu(world) -> None:
    from typer.testing import CliRunner

    from emoforge.cli import app

    out = world.root / "run"
    args = ["train", "--release", world.version, "--base-model", str(world.tiny), "--out", str(out),
            "--home", str(world.home), "--window", "2", "--k", "1", "--batch-size", "4", "--max-length", "320",
            "--max-train-samples", "40", "--max-eval", "12", "--library-max-per-source", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["complete"] and m["mapping"] == "erc7" and m["model"]["device"] == "cpu" and not m["model"]["qlora"]
    # the CPU default: the tiny model's activations are far below half the available memory, so no checkpointing
    choice = m["model"]["checkpointing_choice"]
    assert not m["model"]["gradient_checkpointing"] and choice["activation_estimate_mb"] < choice["available_mb"] / 2
    assert all(0.0 <= p["padding_share"] < 1.0 for p in m["phases"])
    assert [p["buckets"] for p in m["phases"]] == [[0], [0, 1], [0, 1]]
    for phase in m["phases"]:
        assert set(phase["eval"]) == {"release_test", "meld_test"}
        for name, ev in phase["eval"].items():  # the majority baseline on exactly the utterances scored
            preds = _jsonl(out / "phases" / f"phase-{phase['phase']}" / f"predictions-{name}.jsonl")
            assert ev["accuracy"] == pytest.approx(sum(p["gold"] == p["pred"] for p in preds) / len(preds))
            assert sum(ev["predicted"].values()) == len(preds) == ev["n"]
            assert ev["majority"]["label"] == m["majority_label"]
            assert ev["majority"]["accuracy"] == pytest.approx(
                sum(p["gold"] == m["majority_label"] for p in preds) / len(preds))
        for ev in phase["eval"].values():
            assert 0.0 <= ev["weighted_f1"] <= 1.0 and 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] > 0
        assert phase["steps"] > 0 and phase["train_loss"] > 0 and phase["samples_per_s"] > 0
    assert m["phases"][0]["eval"]["meld_test"]["n"] == 6
    assert m["final"] == m["phases"][-1]["eval"] and m["samples_per_s"] > 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (32, 128, 0.05)
    assert {t.rsplit(".", 1)[-1] for t in cfg["target_modules"]} >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (out / "adapter_model.safetensors").is_file()
    # the order actually trained follows the buckets of the release
    bucket_of = {f"{u['dialogue_id']}:{u['utterance_idx']}": u["bucket"] for u in world.utts["train"]}
    orders = [_jsonl(out / "phases" / f"phase-{i}" / "order.jsonl") for i in (1, 2, 3)]
    trained = {r["id"] for o in orders for r in o}
    assert len(trained) == m["n_train"]
    label_of = {f"{u['dialogue_id']}:{u['utterance_idx']}": u["label_erc7"] for u in world.utts["train"]}
    trained_labels = [label_of[i] for i in trained]
    assert trained_labels.count(m["majority_label"]) == max(trained_labels.count(x) for x in trained_labels)
    assert orders[0] and all(bucket_of[r["id"]] == 0 == r["bucket"] for r in orders[0])
    assert {r["id"] for r in orders[0]} == {i for i in trained if bucket_of[i] == 0}
    for o in orders[1:]:
        assert sorted(r["id"] for r in o) == sorted(trained)  # every sample once per epoch
        assert {bucket_of[r["id"]] for r in o} == {0, 1}
    assert [r["id"] for r in orders[1]] != [r["id"] for r in orders[2]]
    preds = _jsonl(out / "phases" / "phase-3" / "predictions-meld_test.jsonl")
    assert len(preds) == 6 and all(p["pred"] in m["labels"] for p in preds)
    # a re-run resumes: finished phases are reloaded, not retrained
    (out / "phases" / "phase-3" / "done.json").unlink()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.count("done earlier") == 2
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["phases"][:2] == m["phases"][:2] and m2["complete"]
    # other settings into the same folder are refused
    res = CliRunner().invoke(app, args[:-1] + ["5"])
    assert res.exit_code == 2 and "other settings" in res.output


def test_loss_falls_the_adapter_moves_and_progress_is_logged_without_a_terminal(world) -> None:
    from safetensors.torch import load_file

    from trainer.train import TrainConfig, train

    out = world.root / "learn"
    lines: list[str] = []
    cfg = TrainConfig(window=1, k=0, batch_size=4, max_length=256, max_train_samples=12, max_eval=6,
                      schedule="all:10", lr=3e-3, warmup_ratio=0.0, lora_dropout=0.0)
    m = train(world.home, world.version, world.tiny, out, cfg, log=lines.append, progress=True)
    losses = m["phases"][0]["losses"]
    q = max(len(losses) // 4, 1)
    # the same dozen samples ten times over: the answer loss falls (a frozen model stays at its first ~10.3 nats)
    last = sum(losses[-q:]) / q
    assert last < sum(losses[:q]) / q and last < losses[0] - 0.5, losses
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(float(v.abs().max()) > 0 for v in lora_b.values())  # LoRA B starts at zero
    # no terminal here: the phase and every evaluation end with a log line with samples and samples/s
    assert any(ln.startswith("phase 1 buckets") and "samples/s" in ln for ln in lines), lines
    assert any(ln.startswith("evaluating on meld_test") for ln in lines), lines
    assert m["peak_rss_mb"] > 0


@pytest.mark.slow
def test_eval_last_phase_scores_only_after_the_last_phase(world) -> None:
    from trainer.train import TrainConfig, train

    out = world.root / "last-only"
    cfg = TrainConfig(window=1, k=0, batch_size=4, max_length=256, max_train_samples=8, max_eval=4,
                      schedule="0:1;all:1", eval_every_phase=False)
    m = train(world.home, world.version, world.tiny, out, cfg, log=lambda _m: None, progress=False)
    first, last = m["phases"]
    assert first["eval"] == {} and not list((out / "phases" / "phase-1").glob("predictions-*.jsonl"))
    assert set(last["eval"]) == {"release_test", "meld_test"} and m["final"] == last["eval"]
    assert len(_jsonl(out / "phases" / "phase-2" / "predictions-meld_test.jsonl")) == last["eval"]["meld_test"]["n"]


def test_a_nan_batch_in_a_real_run_is_skipped_and_recorded(world, monkeypatch) -> None:
    import torch
    from safetensors.torch import load_file

    import trainer.train as tt

    real = tt.answer_loss
    calls = {"n": 0}

    def flaky(model, batch, pad_id, device):  # the third micro-batch's loss is NaN (and so its gradients)
        calls["n"] += 1
        loss = real(model, batch, pad_id, device)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(tt, "answer_loss", flaky)
    out = world.root / "guarded"
    cfg = tt.TrainConfig(window=1, k=0, batch_size=2, max_length=256, max_train_samples=10, max_eval=4,
                         schedule="all:1", eval_every_phase=False)
    m = tt.train(world.home, world.version, world.tiny, out, cfg, log=lambda _m: None, progress=False)
    phase = m["phases"][0]
    assert phase["skipped_steps"] == 1 and phase["losses"][2] is None
    assert math.isfinite(phase["train_loss"]) and all(v is not None for i, v in enumerate(phase["losses"]) if i != 2)
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())

    def no_constants(name: str):
        raise AssertionError(f"metrics.json holds {name}")

    json.loads((out / "metrics.json").read_text(), parse_constant=no_constants)  # strict JSON: no NaN written


def test_default_base_model_resolves_offline(tmp_path) -> None:
    import os

    from trainer.base_model import default_base_model, default_gguf

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert default_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    said: list[str] = []
    folder = default_base_model(tmp_path, log=said.append)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576 and len(said) == 1
    assert default_base_model(tmp_path, log=said.append) == folder and len(said) == 1  # cached: not again
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


def test_resume_after_a_kill_keeps_finished_phases(world) -> None:
    """A run killed (-9) during phase 2 restarts at phase 2: phase 1's adapter and figures are kept, not retrained."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from emoforge.cli import app

    out = world.root / "killed"
    args = ["train", "--release", world.version, "--base-model", str(world.tiny), "--out", str(out),
            "--home", str(world.home), "--window", "1", "--k", "0", "--batch-size", "4", "--max-length", "128",
            "--max-train-samples", "24", "--max-eval", "4", "--eval-sets", "meld", "--schedule", "0:1;all:25"]
    cmd = [sys.executable, "-c", "from emoforge.cli import app; app()", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    done1 = out / "phases" / "phase-1" / "done.json"
    try:
        deadline = time.monotonic() + 900
        while not done1.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done1.is_file(), proc.stderr.read().decode() if proc.poll() is not None else "phase 1 never finished"
        assert proc.poll() is None, "the run ended before it could be killed in phase 2"
        time.sleep(1.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "phases" / "phase-2" / "done.json").exists()
    phase1 = json.loads(done1.read_text())
    adapter1 = (out / "phases" / "phase-1" / "adapter" / "adapter_model.safetensors").read_bytes()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.count("done earlier") == 1
    m = json.loads((out / "metrics.json").read_text())
    assert m["complete"] and len(m["phases"]) == 2 and m["phases"][0] == phase1["metrics"]
    assert m["phases"][1]["samples"] == 25 * m["n_train"]  # phase 2 ran in full after the restart
    assert (out / "phases" / "phase-1" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter1


def test_cross_taxonomy_scoring_counts_a_prediction_equal_to_the_gold_label(world, monkeypatch) -> None:
    """A release of the deepdialogue taxonomy scored on MELD test: the candidates are the release's erc7 labels and
    MELD's gold labels are mapped into that space, so an oracle scorer gets every utterance right, a constant scorer
    is reported as such, and the majority baseline is scored on exactly the same utterances."""
    import torch
    from transformers import AutoTokenizer

    import trainer.train as tt
    from trainer.export import ExportOptions

    cfg = tt.TrainConfig(window=1, k=0, max_length=256, max_eval=12, eval_sets=("meld",))
    prep = tt.prepare(world.home, world.version, cfg, log=lambda m: None)
    assert prep.labels == ["neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"]
    tok = AutoTokenizer.from_pretrained(str(world.tiny), local_files_only=True)
    enc = tt.Encoder(tok, prep.labels, ExportOptions(mapping="erc7", window=1, k=0), cfg.max_length)
    items = {"meld_test": [enc.encode(s) for s in prep.tests["meld_test"]]}
    gold = [e.sample.label for e in items["meld_test"]]
    assert set(gold) <= set(prep.labels) and len(set(gold)) > 1
    gold_of = {tuple(e.prompt): prep.labels.index(e.sample.label) for e in items["meld_test"]}

    def oracle(model, prompts, label_ids, pad_id, batch_size):  # fault injection: a scorer that knows the answer
        return torch.stack([torch.nn.functional.one_hot(torch.tensor(gold_of[tuple(p)]), len(label_ids)).float()
                            for p in prompts])

    model = torch.nn.Linear(1, 1)
    monkeypatch.setattr(tt, "score_labels", oracle)
    res = tt.evaluate_sets(model, enc, items, tok.pad_token_id, 4, majority="neutral")["meld_test"]
    assert res["accuracy"] == 1.0 and res["weighted_f1"] == 1.0 and res["macro_f1"] == 1.0
    assert res["predicted"] == {lab: gold.count(lab) for lab in sorted(set(gold))}
    assert res["majority"]["label"] == "neutral"
    assert res["majority"]["accuracy"] == pytest.approx(gold.count("neutral") / len(gold))

    lines: list[str] = []
    monkeypatch.setattr(tt, "score_labels", lambda model, prompts, *a: torch.eye(7)[[1] * len(prompts)])
    res = tt.evaluate_sets(model, enc, items, tok.pad_token_id, 4, log=lines.append, majority="neutral")["meld_test"]
    assert res["predicted"] == {"anger": len(gold)}
    assert res["accuracy"] == pytest.approx(gold.count("anger") / len(gold))
    assert any("answers 'anger' for all" in ln for ln in lines), lines
