"""ERC evaluation: weighted-F1 and accuracy, and label prediction by constrained scoring.

The prediction of a sample is the label whose tokens (plus the end-of-turn token) have the highest
log-likelihood as the assistant's answer to the sample's prompt: the model can only ever answer with a valid label,
and one forward pass per (sample, label) scores it. Prompts are left-padded so that every answer ends at the last
position and only the answer positions' logits are computed (``logits_to_keep``).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> dict:
    """Accuracy, weighted-F1 (per-label F1 weighted by gold support, as scikit-learn's ``average='weighted'``),
    macro-F1 over the labels present in gold, per-label precision/recall/F1/support, and how often each label was
    predicted (``predicted``: a model that answers one label for everything shows as a single entry)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    n = len(gold)
    if n == 0:
        return {"n": 0, "accuracy": None, "weighted_f1": None, "macro_f1": None, "per_label": {}, "predicted": {}}
    support = Counter(gold)
    predicted = Counter(pred)
    correct = Counter(g for g, p in zip(gold, pred) if g == p)
    names = list(labels) if labels is not None else sorted(set(gold) | set(pred))
    per_label = {}
    for lab in names:
        tp = correct[lab]
        prec = tp / predicted[lab] if predicted[lab] else 0.0
        rec = tp / support[lab] if support[lab] else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_label[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": support[lab]}
    present = [lab for lab in names if support[lab]]
    weighted = sum(per_label[lab]["f1"] * support[lab] for lab in present) / n
    macro = sum(per_label[lab]["f1"] for lab in present) / len(present) if present else 0.0
    return {"n": n, "accuracy": sum(correct.values()) / n, "weighted_f1": weighted, "macro_f1": macro,
            "per_label": per_label, "predicted": dict(sorted(predicted.items()))}


def _left_pad(seqs: Sequence[list[int]], pad_id: int):
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        if x:
            ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
    return ids, mask


def score_labels_full(model, prompts: Sequence[list[int]], label_ids: Sequence[list[int]], pad_id: int,
                      batch_size: int = 8):
    """Reference implementation of :func:`score_labels`: one full forward pass per (prompt, label)."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    device = next(model.parameters()).device
    n_lab = len(label_ids)
    keep = max(len(a) for a in label_ids) + 1
    rows = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            seqs = [p + a for p in chunk for a in label_ids]
            ids, mask = _left_pad(seqs, pad_id)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                        logits_to_keep=keep)
            logp = torch.log_softmax(out.logits.float(), dim=-1)
            scores = torch.zeros(len(seqs))
            for i in range(len(seqs)):
                ans = label_ids[i % n_lab]
                n = len(ans)
                # the token at kept index keep-n+j is predicted by the logits at keep-n+j-1
                idx = torch.arange(keep - n - 1, keep - 1, device=logp.device)
                scores[i] = logp[i, idx, torch.tensor(ans, device=logp.device)].sum().cpu()
            rows.append(scores.view(len(chunk), n_lab))
    return torch.cat(rows) if rows else torch.zeros((0, n_lab))


def score_labels(model, prompts: Sequence[list[int]], label_ids: Sequence[list[int]], pad_id: int,
                 batch_size: int = 8):
    """Log-likelihood of every label answer for every prompt: a ``len(prompts) x len(label_ids)`` tensor.

    The prompts (left-padded) go through the model once; their key/value cache is repeated once per label and only
    the label tokens are run on top of it, so scoring K labels costs one prompt pass plus K short passes."""
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

    device = next(model.parameters()).device
    n_lab = len(label_ids)
    width_a = max(len(a) for a in label_ids)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            b = len(chunk)
            ids, mask = _left_pad(chunk, pad_id)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                        use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # b x V: first answer token
            cache = out.past_key_values
            for layer in cache.layers:
                layer.batch_repeat_interleave(n_lab)
            ans = torch.full((b * n_lab, width_a), pad_id, dtype=torch.long)
            amask = torch.zeros((b * n_lab, width_a), dtype=torch.long)
            for i in range(b * n_lab):
                a = label_ids[i % n_lab]
                ans[i, :len(a)] = torch.tensor(a)
                amask[i, :len(a)] = 1
            full_mask = torch.cat([mask.repeat_interleave(n_lab, dim=0), amask], dim=1)
            lengths = mask.sum(-1).repeat_interleave(n_lab)
            apos = lengths[:, None] + torch.arange(width_a)[None, :]
            out2 = model(input_ids=ans.to(device), attention_mask=full_mask.to(device),
                         position_ids=apos.to(device), past_key_values=cache, use_cache=True)
            rest = torch.log_softmax(out2.logits.float(), dim=-1)  # (b*K) x width_a x V
            scores = torch.zeros(b * n_lab)
            for i in range(b * n_lab):
                a = label_ids[i % n_lab]
                s = first[i // n_lab, a[0]]
                if len(a) > 1:
                    s = s + rest[i, torch.arange(len(a) - 1, device=rest.device),
                                 torch.tensor(a[1:], device=rest.device)].sum()
                scores[i] = s.cpu()
            rows.append(scores.view(b, n_lab))
    return torch.cat(rows) if rows else torch.zeros((0, n_lab))
