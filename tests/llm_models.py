"""A tiny random-weight causal LM (Llama architecture) with a byte-level BPE tokenizer and a chat
template, built offline and saved with `save_pretrained`, so tests load it as a user would load a
real one (`--llm local:DIR`)."""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CORPUS = [
    "A player jumps near the rim and taps the basketball into the hoop.",
    "The gymnast runs, springs off the vault table and lands on both feet.",
    'Answer with one JSON object and nothing else: {"actions": {"name": ["step 1", "step 2"]}}',
    "Decompose each action below into its ordered sequence of visually observable steps.",
    "Each step is one self-contained sentence of 10 to 15 words that names the people.",
    "Actions in basketball: Tip-in, Putback dunk, Alley-oop Dunk, Tomahawk Dunk, Windmill Dunk.",
]


def _synthetic_bpe(vocab_size: int, seed: int = 0):
    """A byte-level BPE of `vocab_size` tokens without training: random letter strings (with and
    without the leading-space mark) built up one letter at a time, each step a merge."""
    import random

    from tokenizers import models, pre_tokenizers

    rng = random.Random(seed)
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(vocab) < vocab_size:
        word = rng.choice(["", "\u0120"]) + "".join(rng.choices(letters, k=rng.randint(2, 9)))
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab and len(vocab) < vocab_size:
                merges.append((word[: end - 1], word[end - 1]))
                vocab[word[:end]] = len(vocab)
    return models.BPE(vocab, merges)


def build_tokenizer(vocab_size: int = 400):
    """A fast byte-level BPE tokenizer (every byte is a token, so any text can be written), trained
    on a few sentences; above 400 tokens (benchmarks), a synthetic one of a real model's size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(_synthetic_bpe(vocab_size) if vocab_size > 400 else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if vocab_size <= 400:
        tok.train_from_iterator(CORPUS * 10, trainer=trainer)
    tok.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 30,
    )


def build_causal_lm(
    directory: Path, seed: int = 0, context: int = 4096, chat_template: bool = True, vocab_size: int = 400
) -> Path:
    """Save a 2-layer, 32-wide random Llama and its tokenizer in `directory`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    if not chat_template:
        tokenizer.chat_template = None
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")],
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
