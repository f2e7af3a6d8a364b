"""Tiny random-weight X-CLIP and Qwen2-VL checkpoints, built offline and saved with
`save_pretrained`, so the baseline tests load them as a user loads a real one (a folder path)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Qwen2-VL's chat template (its image parts as Qwen writes them), trimmed to what the tests use
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2VL_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def clip_tokenizer(directory: Path):
    """The tiny byte-level CLIP tokenizer of tests/models.py, written into `directory`."""
    from transformers import CLIPTokenizer

    from models import _bytes_to_unicode

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
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))


def _videomae_image_processor(**kwargs):
    try:  # transformers 5: the PIL backend (the default one needs torchvision)
        from transformers import VideoMAEImageProcessorPil as cls
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as cls
    return cls(**kwargs)


def xclip_config(num_frames: int = 4, image_size: int = 32, patch_size: int = 8, vocab_size: int = 1000):
    from transformers import XCLIPConfig

    return XCLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            num_frames=num_frames,
            mit_hidden_size=16,  # X-CLIP needs it equal to projection_dim
            mit_intermediate_size=37,
            mit_num_hidden_layers=1,
            mit_num_attention_heads=2,
        ),
        projection_dim=16,
        prompt_layers=1,
        prompt_num_attention_heads=2,
    )


def build_xclip(
    directory: Path, seed: int = 0, num_frames: int = 4, image_size: int = 32, resize_to: int | None = None
) -> Path:
    """A tiny random X-CLIP (`num_frames` frames of `image_size` pixels) with its processor: a
    VideoMAE image processor (shorter side to `resize_to`, default `image_size`, then the centre
    crop; X-CLIP's mean/std) and a CLIP tokenizer."""
    from transformers import XCLIPModel

    tokenizer = clip_tokenizer(directory)
    config = xclip_config(num_frames, image_size, vocab_size=len(tokenizer))
    config.text_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config.text_config.pad_token_id = config.text_config.eos_token_id
    torch.manual_seed(seed)
    model = XCLIPModel(config).eval()
    image_processor = _videomae_image_processor(
        size={"shortest_edge": resize_to or image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=2,  # bilinear, as the microsoft/xclip-* checkpoints
    )
    model.save_pretrained(directory)
    # the layout of the hub's microsoft/xclip-* folders: preprocessor_config.json naming the processor
    image_processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _set_processor_class(directory, "XCLIPProcessor")
    return directory


def _set_processor_class(directory: Path, name: str) -> None:
    path = directory / "preprocessor_config.json"
    config = json.loads(path.read_text())
    config["processor_class"] = name
    path.write_text(json.dumps(config, indent=2))


# ---------------------------------------------------------------------- Qwen2-VL


def qwen2vl_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer (tests/llm_models.py) with Qwen2-VL's special tokens and chat
    template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llm_models import CORPUS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN2VL_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*CORPUS, "Answer with the option's text only."] * 10, trainer=trainer)
    tok.add_special_tokens(QWEN2VL_SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN2VL_TEMPLATE,
        model_max_length=1 << 20,
    )


def _qwen2vl_image_processor(**kwargs):
    try:
        from transformers import Qwen2VLImageProcessorPil as cls
    except ImportError:
        from transformers import Qwen2VLImageProcessor as cls
    return cls(**kwargs)


def qwen2vl_config(
    tokenizer,
    hidden: int = 48,
    layers: int = 2,
    patch: int = 4,
    text: dict | None = None,
    vision: dict | None = None,
):
    """A Qwen2-VL config around `tokenizer`'s special tokens: tiny by default; `text` and `vision`
    override any setting (the benchmark gives Qwen2-VL-2B's)."""
    from transformers import Qwen2VLConfig

    ids = tokenizer.convert_tokens_to_ids
    half = hidden // 4 // 2  # half a head
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # M-RoPE: its (temporal, height, width) sections add up to half a head
        rope_scaling={"type": "mrope", "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]},
        tie_word_embeddings=True,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    text_config.update(text or {})
    vision_config = dict(
        depth=1,
        embed_dim=32,
        hidden_size=hidden,
        num_heads=2,
        mlp_ratio=2,
        patch_size=patch,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    )
    vision_config.update(vision or {})
    specials = dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    try:  # transformers 5: the text settings live in text_config
        return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **specials)
    except TypeError:
        return Qwen2VLConfig(**text_config, vision_config=vision_config, **specials)


def build_qwen2vl(
    directory: Path,
    seed: int = 0,
    patch: int = 4,
    image_pixels: int = 32 * 32,
    config=None,
    dtype: torch.dtype | None = None,
) -> Path:
    """A tiny random Qwen2-VL (1 vision block, 2 text layers, 48 wide; or `config`) with its
    tokenizer, chat template and image processor (images of at most `image_pixels` pixels,
    `patch`-pixel patches), saved in `dtype` (default float32)."""
    from transformers import Qwen2VLForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen2vl_tokenizer()
    config = config(tokenizer) if callable(config) else qwen2vl_config(tokenizer, patch=patch)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    unit = patch * 2  # patch x merge size
    image_processor = _qwen2vl_image_processor(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=unit * unit,
        max_pixels=image_pixels,
    )
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    _set_processor_class(directory, "Qwen2VLProcessor")
    (directory / "chat_template.jinja").write_text(QWEN2VL_TEMPLATE)
    return directory
