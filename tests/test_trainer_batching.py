"""The trainer's CPU savings keep its semantics: answer-only logits give the loss (and gradients) of full logits;
length-bucketed batches train every sample once and pad less."""

from __future__ import annotations

import random

import pytest


def test_answer_only_loss_and_gradients_equal_the_full_logits_loss(tmp_path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.batching import full_logits_loss
    from trainer.tiny_model import build_tiny_model
    from trainer.train import Encoded, _collate, answer_loss

    folder = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    rng = random.Random(4)
    # prompts and answers of different lengths, so padding and the answer alignment are both exercised
    batch = [Encoded(None, [rng.randrange(5, 30000) for _ in range(n)], [rng.randrange(5, 30000) for _ in range(a)] + [2])
             for n, a in ((5, 1), (23, 3), (11, 2), (40, 1))]
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in params]

    pad = 0
    ids, mask, pos, _, _ = _collate(batch, pad)
    full, g_full = loss_and_grads(lambda: full_logits_loss(model, ids, mask, pos, [e.answer for e in batch]))
    ans, g_ans = loss_and_grads(lambda: answer_loss(model, batch, pad, "cpu"))
    assert ans == pytest.approx(full, rel=1e-5, abs=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_ans, g_full))
    assert any(float(g.abs().max()) > 0 for g in g_ans)
    # and both equal the mean over answer tokens of unpadded passes, one sample at a time
    total, n_tok = 0.0, 0
    with torch.no_grad():
        for e in batch:
            logits = model(input_ids=torch.tensor([e.prompt + e.answer])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            for j, t in enumerate(e.answer):
                total -= float(logp[len(e.prompt) - 1 + j, t])
                n_tok += 1
    assert ans == pytest.approx(total / n_tok, rel=1e-4)


def test_length_batches_train_every_sample_once_and_pad_less() -> None:
    from trainer.batching import length_batches, padding_share, plain_batches

    rng = random.Random(1)
    lengths = [rng.randint(40, 400) for _ in range(203)]
    order = list(range(len(lengths)))
    rng.shuffle(order)
    plain = plain_batches(order, 8)
    bucketed = length_batches(order, lengths, 8, seed="0:1:0")
    assert sorted(i for b in bucketed for i in b) == sorted(order)  # every sample exactly once
    assert all(1 <= len(b) <= 8 for b in bucketed) and len(bucketed) == len(plain)
    assert padding_share(bucketed, lengths) < padding_share(plain, lengths) / 3
    assert bucketed == length_batches(order, lengths, 8, seed="0:1:0")  # reproducible
    assert bucketed != length_batches(order, lengths, 8, seed="0:1:1")  # another epoch: another batch order
    # the phase order still matters at the scale of a pool: the first pool's samples come first
    pool = set(order[:8 * 16])
    assert {i for b in bucketed[:16] for i in b} == pool
    # pool 1: the plain batches, each sorted by length
    assert [sorted(b) for b in length_batches(order, lengths, 8, seed=0, pool=1)] == [sorted(b) for b in plain]
    with pytest.raises(ValueError):
        length_batches(order, lengths, 0, seed=0)
