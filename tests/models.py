"""Tiny randomly initialised SigLIP and CLIP checkpoints, built offline and saved to disk, so that
tests load them through the same `load_encoder(path)` a user calls."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch

WORDS = [
    "a",
    "the",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "player",
    "ball",
    "court",
    "kicks",
    "jumps",
    "runs",
    "shoots",
    "dunk",
    "spin",
    "in",
    "basketball",
    "soccer",
    "video",
    "frame",
    "step",
    "of",
    "with",
    "his",
    "her",
    "hand",
    "foot",
    "net",
    "goal",
]


def _sentencepiece_model(path: Path) -> Path:
    import sentencepiece as spm

    sentences = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=60,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
    )
    path.write_bytes(buf.getvalue())
    return path


def build_siglip(
    directory: Path,
    seed: int = 0,
    logit_scale: float = math.log(10.0),
    logit_bias: float = -2.0,
    image_size: int = 32,
    gemma: bool = False,
) -> Path:
    """A tiny random SigLIP; `gemma=True` gives it a Gemma tokenizer, the layout of SigLIP 2's
    fixed-resolution checkpoints (model type "siglip", Gemma vocabulary)."""
    from transformers import (
        GemmaTokenizer,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = _sentencepiece_model(directory / "spiece.model")
    tokenizer = (GemmaTokenizer if gemma else SiglipTokenizer)(vocab_file=str(vocab), model_max_length=64)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        ),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        model.logit_bias.fill_(logit_bias)
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=False))


def build_clip(directory: Path, seed: int = 0, image_size: int = 32) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["r e", "re d</w>", "b a", "ba l", "bal l</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            eos_token_id=eos,
            bos_token_id=vocab["<|startoftext|>"],
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
