"""Quality gates on labelled real data: does the defect catalogue refuse what it should and keep real dialogue?

Positives: real turns of DailyDialog test and ESConv test (checked in their dialogue, against the real generation
prompt of the turn). Negatives: each defect class of :mod:`schemas.defects` applied to real turns by the
deterministic corruption functions below (one corruption per turn, seeded). Reported:

* ``recall_<class>``: share of corrupted turns refused (any defect; ``by_class_<class>`` when the class itself
  was named); ``recall_min`` over the classes;
* ``false_reject``: share of real turns (DailyDialog test + ESConv test) refused; ``false_reject_heldout`` on
  DailyDialog validation + ESConv validation, which were never looked at while the catalogue was written
  (its patterns were adjusted against false positives on the test splits);
* the classifier emotion judge (:mod:`flows.emotion_judge`, thresholds tuned on DailyDialog *validation* at
  training time): ``auroc_emotion`` true label vs a label of opposite valence on DailyDialog test (emotional
  turns), ``recall_emotion_swap`` (swapped label not supported) and ``false_reject_emotion`` (true label not
  supported); ``auroc_incoherence``: cosine of a turn with the previous one, true next turn vs a turn from another
  dialogue (a measurement only: no gate uses it);
* ``turns_per_s_checks`` (catalogue) and ``turns_per_s_judge`` (classifier, embeddings included when not cached).

    .venv/bin/python bench/gates.py --quick        # < 2 min once the judge's head is stored in --home
    .venv/bin/python bench/gates.py                # every turn of the splits

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from flows.emotion_judge import (  # noqa: E402
    TrainSpec, auroc, dailydialog_dialogues, load_or_train, swap_pairs,
)
from flows.prompt_styles import instructions_text  # noqa: E402
from flows.prompts import turn_messages  # noqa: E402
from schemas.defects import DEFECT_NAMES, DefectContext, turn_defects  # noqa: E402
from schemas.records import Scenario  # noqa: E402
from schemas.text import count_words  # noqa: E402
from schemas.taxonomy import load_taxonomy  # noqa: E402

BENCH = ROOT.parent / "shared" / "benchdata"
WORD_CAP = 120  # hard cap for real turns (ESConv has 95-word turns); the corruption goes past it
TAX = load_taxonomy("erc")
ERC_TO_TAX = {"neutral": "Neutral", "anger": "Angry", "disgust": "Disgusted", "fear": "Anxious", "joy": "Happy",
              "sadness": "Sad", "surprise": "Surprised"}


# ---- real data -------------------------------------------------------------------------------------------------
def esconv(split: str) -> list[list[tuple[str, str]]]:
    out = []
    for line in (BENCH / "esconv" / f"{split}.jsonl").read_text().splitlines():
        d = json.loads(line)
        out.append([(u["text"].strip(), "neutral") for u in d["dialog"] if u["text"].strip()])
    return out


def prompt_of(dialogue: list[tuple[str, str]], i: int, k: int) -> str:
    """The real generation prompt of turn ``i`` (the project's turn template, a domain chosen by ``k``)."""
    emotions = [ERC_TO_TAX[lab] for _, lab in dialogue[: i + 1]]
    dom = TAX.domains[k % len(TAX.domains)].name
    scn = Scenario(id="bench", domain=dom, model_a="a", model_b="b", n_turns=min(64, i + 1), emotions=emotions,
                   seed=0, index=k, taxonomy=TAX.name)
    return instructions_text(turn_messages(scn, TAX, [t for t, _ in dialogue[:i]]))


# ---- corruptions: one function per defect class ----------------------------------------------------------------
_FOREIGN = [
    "No sé si podremos llegar a tiempo para la cena de esta noche.",
    "Je pense que nous devrions partir avant que la pluie commence vraiment.",
    "Ich habe keine Ahnung, wann der nächste Zug nach Hause fährt.",
    "Saya tidak tahu apakah kita bisa datang besok pagi ke kantor.",
    "Eu acho que devemos comprar mais pão para o café da manhã amanhã.",
    "Non so se riusciremo a finire il lavoro entro venerdì sera.",
]
_NON_LATIN = ["我真的很高兴见到你", "Я очень рад тебя видеть", "とても嬉しいです", "أنا سعيد جدا برؤيتك", "मैं बहुत खुश हूँ"]
_META = [
    "As an AI, I don't have feelings, but {t}", "Here is my reply: {t}", "My next line: {t}",
    "My response to you is that {t}", "Sure! Here's the next line of the conversation: {t}",
    "{t} I will respond with a happy tone.", "You are a person talking with B. {t}", "{t} (as the user asked)",
    "I'm an AI language model, so {t}", "Here is the dialogue: {t}", "{t} That is my next line.",
    "Respond with one sentence: {t}", "As an AI assistant, I would say: {t}", "{t} Let me know what the user says.",
]


def _words(rng: random.Random, n: int) -> str:
    letters = "bcdfghklmnprstvz"
    vow = "aeiou"
    return " ".join("".join(rng.choice(letters) + rng.choice(vow) for _ in range(rng.randint(2, 4))) for _ in range(n))


def corrupt(cls: str, t: str, d: list[str], i: int, prompt: str, rng: random.Random, others: list[str]) -> tuple[str, dict]:
    """A real turn ``t`` (turn ``i`` of ``d``) with defect ``cls``; returns (text, context overrides)."""
    if cls == "empty":
        return rng.choice(["", "   ", "...", "—", "?!", "\n"]), {}
    if cls == "special_token":
        tok = rng.choice(["<|im_end|>", "<end_of_turn>", "</s>", "<|eot_id|>", "<|endoftext|>", "[/INST]", "<start_of_turn>model"])
        return (f"{t} {tok}" if rng.random() < 0.7 else f"{tok} {t}"), {}
    if cls == "markup":
        return rng.choice([
            '{"coherence": 5, "verdict": ', f'{{"text": "{t}"}}', f"<p>{t}</p>", f"```\n{t}\n```", f'"reply": "{t}"',
            f"## Reply\n{t}", f"- {t}", '{"emotion_fidelity": [4, 5], "rationale": "', f"<speak>{t}</speak>",
            f"`{t}`",
        ]), {}
    if cls == "url":
        return f"{t} " + rng.choice(["See https://example.com/page.", "Check www.example.org for details.",
                                     "It's at http://bit.ly/3xYz.", "Go to shop.example.com/deals now."]), {}
    if cls == "role_prefix":
        nxt = d[i + 1] if i + 1 < len(d) else rng.choice(others)
        return rng.choice([f"A: {t}", f"User: {t}", f"Speaker 2: {t}", f"**Assistant**: {t}", f"B: {t}",
                           f"{t}\nB: {nxt}", f"Person A: {t}", f"Human: {t}"]), {}
    if cls == "stage_direction":
        return rng.choice([f"*smiles* {t}", f"(laughs) {t}", f"{t} [sighs]", f"*nods slowly* {t}",
                           f"{t} (pauses)", f"(excitedly) {t}", f"[Happy] {t}", f"{t} *grins*"]), {}
    if cls == "meta_talk":
        return rng.choice(_META).format(t=t), {}
    if cls == "prompt_copy":
        words = prompt.split("\n")[0].split()  # the system instructions (the rest holds the conversation)
        n = rng.randint(8, 14)
        start = rng.randrange(0, max(1, len(words) - n))
        return " ".join(words[start:start + n]), {}
    if cls == "turn_copy":
        longer = [j for j in range(i) if count_words(d[j]) >= 3]
        prev = d[rng.choice(longer)] if longer else d[i - 1]
        variants = [prev, prev.upper(), prev.rstrip(".!? ") + "!"] + ([prev + " Yes."] if count_words(prev) >= 3 else [])
        return rng.choice(variants), {}
    if cls == "truncated":
        cut = rng.uniform(0.35, 0.9)
        pos = max(3, int(len(t) * cut))
        text = t[:pos].rstrip()
        while text and text[-1] in ".!?…\"'”’)» ":
            text = text[:-1].rstrip()
        return text, {}
    if cls == "charset":
        kind = rng.randrange(5)
        if kind == 4:  # emoji, alone or after the line (what the tiny embedded models write)
            emo = rng.choice(["😊", "😂", "👍", "❤️", "🎉", "😢", "🙏", "✨"])
            return (emo * rng.randint(1, 3) if rng.random() < 0.4 else f"{t} {emo}"), {}
        if kind == 0:
            return f"{t} {rng.choice(_NON_LATIN)}", {}
        if kind == 1:
            return (t.replace(" ", " â€™ ", 1) if " " in t else t + " â€™"), {}
        if kind == 2:
            return (t.replace(" ", "\u200b ", 1) if " " in t else t + "\u200b"), {}
        return f"{rng.choice(_NON_LATIN)}", {}
    if cls == "language":
        return (rng.choice(_FOREIGN) if rng.random() < 0.6 else _words(rng, rng.randint(8, 16)).capitalize() + "."), {}
    if cls == "over_long":
        pool = [t] + [x for x in d if x != t] + others
        text = t
        k = 0
        while count_words(text) <= WORD_CAP:
            text += " " + pool[k % len(pool)]
            k += 1
        return text, {}
    raise KeyError(cls)


def applicable(cls: str, i: int, punctuated: bool) -> bool:
    if cls == "turn_copy":
        return i >= 1
    if cls == "truncated":
        return punctuated  # in chat logs an unfinished line is normal; the token-limit rule covers generation
    return True


# ---- the runs --------------------------------------------------------------------------------------------------
def sources(split: str, quick: bool, rng: random.Random) -> list[tuple[str, list[list[tuple[str, str]]], bool]]:
    dd = dailydialog_dialogues(BENCH, split)
    es = esconv("valid" if split == "validation" else split)
    if quick:
        dd = rng.sample(dd, min(100, len(dd)))
        es = rng.sample(es, min(15, len(es)))
    return [("dailydialog", dd, True), ("esconv", es, False)]


def check_turn(text: str, d: list[str], i: int, prompt: str, punctuated: bool, **over) -> list[tuple[str, str]]:
    ctx = DefectContext(earlier=tuple(d[:i]), prompt=prompt, word_cap=WORD_CAP, language="en", punctuated=punctuated,
                        emotions=tuple(TAX.emotion_names), **over)
    return turn_defects(text, ctx)


def run_checks(quick: bool, seed: int) -> dict:
    rng = random.Random(seed)
    out: dict = {}
    n_turns = 0
    t0 = time.perf_counter()
    refused: dict[str, list[int]] = {c: [] for c in DEFECT_NAMES}
    named: dict[str, list[int]] = {c: [] for c in DEFECT_NAMES}
    fr_ex: list[str] = []
    for split, key in (("test", "false_reject"), ("validation", "false_reject_heldout")):
        pos_bad = pos_n = 0
        for name, dialogues, punct in sources(split, quick, rng):
            others = [t for dd in dialogues[:50] for t, _ in dd]
            for k, dlg in enumerate(dialogues):
                d = [t for t, _ in dlg]
                for i, t in enumerate(d):
                    prompt = prompt_of(dlg, i, k)
                    found = check_turn(t, d, i, prompt, punct)
                    n_turns += 1
                    pos_n += 1
                    if found:
                        pos_bad += 1
                        if split == "test" and len(fr_ex) < 12:
                            fr_ex.append(f"{name}: {t[:70]!r} -> {found[0][0]}: {found[0][1]}")
                    if split != "test":
                        continue
                    for cls in DEFECT_NAMES:
                        if not applicable(cls, i, punct):
                            continue
                        bad, over = corrupt(cls, t, d, i, prompt, rng, others)
                        got = {c for c, _ in check_turn(bad, d, i, prompt, punct, **over)}
                        n_turns += 1
                        refused[cls].append(int(bool(got)))
                        named[cls].append(int(cls in got))
        out[key] = round(pos_bad / max(1, pos_n), 4)
        out[f"n_positive_{split}"] = pos_n
    wall = time.perf_counter() - t0
    for cls in DEFECT_NAMES:
        out[f"recall_{cls}"] = round(float(np.mean(refused[cls])), 4) if refused[cls] else None
        out[f"by_class_{cls}"] = round(float(np.mean(named[cls])), 4) if named[cls] else None
        out[f"n_{cls}"] = len(refused[cls])
    out["recall_min"] = min(v for k, v in out.items() if k.startswith("recall_") and v is not None)
    out["turns_per_s_checks"] = round(n_turns / wall, 1)
    out["false_reject_examples"] = fr_ex
    return out


def run_judge(home: Path, quick: bool, seed: int) -> dict:
    rng = random.Random(seed + 1)
    t0 = time.perf_counter()
    judge = load_or_train(home, TrainSpec(BENCH))
    train_s = time.perf_counter() - t0
    dd = dailydialog_dialogues(BENCH, "test")
    pairs = swap_pairs(dd)
    if quick:
        pairs = rng.sample(pairs, min(400, len(pairs)))
    t0 = time.perf_counter()
    p = judge.probs([t for t, _, _ in pairs])
    true = [judge.score_row(row, ERC_TO_TAX[lab], TAX) for row, (_, lab, _) in zip(p, pairs)]
    swapped = [judge.score_row(row, ERC_TO_TAX[sw], TAX) for row, (_, _, sw) in zip(p, pairs)]
    judge_s = time.perf_counter() - t0

    def supported(s) -> bool:
        return s.score >= judge.support_at and s.opposite < judge.contradict_at

    # incoherence: a turn vs the previous one, true next turn vs one from another dialogue
    conv = [d for d in dd if len(d) >= 2]
    conv = rng.sample(conv, min(200 if quick else 1000, len(conv)))
    prev, nxt, other = [], [], []
    for k, d in enumerate(conv):
        i = rng.randrange(1, len(d))
        prev.append(d[i - 1][0])
        nxt.append(d[i][0])
        od = conv[(k + 1 + rng.randrange(len(conv) - 1)) % len(conv)]
        other.append(od[rng.randrange(len(od))][0])
    e_prev, e_next, e_other = (judge.cache.get(x) for x in (prev, nxt, other))
    coh_true = (e_prev * e_next).sum(1)
    coh_other = (e_prev * e_other).sum(1)
    return {
        "auroc_emotion": round(auroc([s.score for s in true], [s.score for s in swapped]), 4),
        "recall_emotion_swap": round(float(np.mean([not supported(s) for s in swapped])), 4),
        "false_reject_emotion": round(float(np.mean([not supported(s) for s in true])), 4),
        "n_emotion_pairs": len(pairs),
        "auroc_incoherence": round(auroc(coh_true.tolist(), coh_other.tolist()), 4),
        "n_incoherence_pairs": len(conv),
        "turns_per_s_judge": round(len(pairs) / max(judge_s, 1e-9), 1),
        "judge_load_or_train_s": round(train_s, 1),
        "judge_thresholds": {"support_at": judge.support_at, "contradict_at": judge.contradict_at,
                             "validation_auroc": judge.meta.get("validation_auroc")},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a sample of each split (under 2 minutes with a stored head)")
    ap.add_argument("--home", type=Path, default=ROOT / ".cache" / "bench-gates",
                    help="where the judge's head and embeddings are stored (reused between runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-judge", action="store_true", help="the deterministic catalogue only")
    args = ap.parse_args(argv)
    if not BENCH.is_dir():
        sys.exit(f"benchmark data not found: {BENCH}")
    t0 = time.perf_counter()
    res = {"bench": "gates", "quick": args.quick, "seed": args.seed}
    res.update(run_checks(args.quick, args.seed))
    if not args.no_judge:
        res.update(run_judge(args.home, args.quick, args.seed))
    res["targets_met"] = bool(
        all(res[f"recall_{c}"] is None or res[f"recall_{c}"] >= 0.99 for c in DEFECT_NAMES)
        and res["recall_min"] >= 0.95 and res["false_reject"] <= 0.05
        and (args.no_judge or res["auroc_emotion"] >= 0.75))
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    for ex in res.pop("false_reject_examples"):
        print("false reject:", ex, file=sys.stderr)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
