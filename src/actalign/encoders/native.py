"""SigLIP without transformers: the towers in plain torch (`encoders.siglip`), the tokenizer on
sentencepiece (`encoders.siglip_tokenizer`) and the image settings read from the checkpoint's
JSON. A fresh process then imports torch, safetensors and sentencepiece, not transformers'
modeling code (scipy.optimize, torch.distributed.tensor, torch._dynamo: about twice `import
torch`; docs/benchmarks.md).

`load_encoder` takes this path for a checkpoint whose config.json says model type "siglip", whose
weights are safetensors and whose tokenizer is SigLIP's sentencepiece one (`native_reason` says
why another is not); ACTALIGN_LOADER=transformers turns it off, =native insists on it. The
numbers, identity and behaviour are TransformersEncoder's (tests/test_encoders_native.py).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from types import SimpleNamespace

from actalign.encoders.common import ImageTextEncoder
from actalign.errors import ActAlignError
from actalign.hub import load_checkpoint

__all__ = ["LOADER_ENV", "NativeEncoder", "loader_choice", "native_reason"]

LOADER_ENV = "ACTALIGN_LOADER"
LOADERS = ("auto", "native", "transformers")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
IMAGE_PROCESSORS = ("SiglipImageProcessor", "SiglipImageProcessorFast")
# SiglipImageProcessor's defaults, for the keys a preprocessor_config.json leaves out
IMAGE_DEFAULTS = {
    "do_resize": True, "size": {"height": 224, "width": 224}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
}  # fmt: skip
# transformers' SiglipTextConfig / SiglipVisionConfig defaults, for the keys config.json leaves out
TEXT_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6, "projection_size": None,
}  # fmt: skip
VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6, "vision_use_head": True,
}  # fmt: skip
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")  # what the towers compute: F.gelu, tanh or exact


def loader_choice() -> str:
    """$ACTALIGN_LOADER: "auto" (the default), "native" or "transformers"."""
    value = os.environ.get(LOADER_ENV, "").strip().lower() or "auto"
    if value not in LOADERS:
        raise ActAlignError(f"Unknown {LOADER_ENV}={value!r}; use one of {', '.join(LOADERS)}.")
    return value


# ---------------------------------------------------------------------- which checkpoints


def native_reason(name: str) -> str | None:
    """None where `name` (a folder or hub id) can load without transformers, else why not.
    Reads only small JSON files; a hub id not in the cache is asked of the hub (config and
    tokenizer config), and is left to transformers where the hub cannot be reached."""
    try:
        config = _json(_peek(name, "config.json"))
    except (OSError, ValueError):
        return "its config.json cannot be read"
    if config.get("model_type") != "siglip":
        return f"its model type is {config.get('model_type')!r}, not 'siglip'"
    if any(c["hidden_act"] not in ACTIVATIONS for c in tower_configs(config)):
        return "its activation is not a GELU"
    if not any(_peek(name, w, required=False) for w in WEIGHTS):
        return "its weights are not safetensors"
    try:
        tokenizer = _json(_peek(name, "tokenizer_config.json"))
    except (OSError, ValueError):
        return "its tokenizer_config.json cannot be read"
    # no tokenizer_class: transformers takes the model type's, SigLIP's
    if tokenizer.get("tokenizer_class", "SiglipTokenizer") != "SiglipTokenizer":
        return f"its tokenizer is {tokenizer.get('tokenizer_class')!r}, not SigLIP's sentencepiece one"
    if _peek(name, "spiece.model", required=False) is None:
        return "it has no spiece.model"
    image = _image_settings(name)
    if image is None or image.get("image_processor_type", IMAGE_PROCESSORS[0]) not in IMAGE_PROCESSORS:
        return "its image processor is not SigLIP's"
    return None


def tower_configs(config: dict) -> tuple[dict, dict]:
    """(text, vision) settings of a SigLIP config.json, transformers' defaults filled in."""
    text = {**TEXT_DEFAULTS, **(config.get("text_config") or {})}
    vision = {**VISION_DEFAULTS, **(config.get("vision_config") or {})}
    return text, vision


def _json(path: Path | None) -> dict:
    if path is None:
        raise OSError("missing")
    return json.loads(Path(path).read_text())


def _peek(name: str, filename: str, required: bool = True, local_only: bool | None = None) -> Path | None:
    """A checkpoint file: in the folder, in the hub cache, or downloaded (unless `local_only`)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        path = folder / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(name, filename)
        if isinstance(cached, str):
            return Path(cached)
        if cached is not None or local_only:  # known to be absent, or not to be downloaded
            return None
        if local_only is None and not _hub_reachable():
            return None
        return Path(hf_hub_download(name, filename))
    except Exception as e:  # absent on the hub, offline, unreachable: not this file
        if required and local_only is False:
            raise OSError(f"{filename}: {e}") from None
        return None


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """Whether the hub answers (one quick connection, once per process; `hub.check_hub_reachable`)."""
    from actalign.hub import check_hub_reachable

    try:
        check_hub_reachable("config", "model")
    except ActAlignError:
        return False
    return True


def _image_settings(name: str, local_only: bool | None = None) -> dict | None:
    """The image processor's settings: preprocessor_config.json, or the "image_processor" of
    processor_config.json (transformers 5 saves it there)."""
    path = _peek(name, "preprocessor_config.json", required=False, local_only=local_only)
    if path is not None:
        return _json(path)
    path = _peek(name, "processor_config.json", required=False, local_only=local_only)
    if path is not None:
        return _json(path).get("image_processor")
    return None


# ---------------------------------------------------------------------- the encoder


class NativeEncoder(ImageTextEncoder):
    """A SigLIP checkpoint in plain torch: TransformersEncoder's numbers and behaviour, loaded
    without transformers. towers="text" reads and builds the text tower alone."""

    def _import_stack(self) -> None:
        import sentencepiece  # noqa: F401
        import torch  # noqa: F401
        from safetensors import safe_open  # noqa: F401

        import actalign.encoders.siglip  # noqa: F401

    def _load(self, name_or_path: str) -> tuple:
        text_only = self.towers == "text"
        loaded, source = load_checkpoint(
            name_or_path, lambda where, local: _load(where, local, text_only), "model", quiet=_quiet_hub
        )
        model, processor = loaded
        return model, processor, "siglip", source

    def _activations(self) -> tuple[type, ...]:
        from actalign.encoders.siglip import GeluTanh

        return (GeluTanh,)


def _quiet_hub():
    """The hub's bars off when quiet; transformers' logging is not there to quiet."""
    from contextlib import nullcontext

    from actalign.progress import quiet_hub

    quiet_hub()
    return nullcontext()


def _load(where: str, local_files_only: bool, text_only: bool) -> tuple:
    """(model, processor) of a folder or hub id; OSError where a file is missing."""
    from actalign.encoders.siglip import build
    from actalign.encoders.siglip_tokenizer import load_tokenizer

    def need(filename: str) -> Path:
        path = _peek(where, filename, local_only=local_files_only)
        if path is None:
            raise FileNotFoundError(f"{filename} is not in {where}")
        return path

    config = _json(need("config.json"))
    tokenizer = load_tokenizer(need("spiece.model"), need("tokenizer_config.json"))
    image = _image_settings(where, local_files_only)
    if image is None:
        raise FileNotFoundError(f"preprocessor_config.json is not in {where}")
    weights = _weights(where, local_files_only, need)
    text, vision = tower_configs(config)
    model = build(text, None if text_only else vision, weights)
    image_processor = SimpleNamespace(**{**IMAGE_DEFAULTS, **image})
    processor = SimpleNamespace(tokenizer=tokenizer, image_processor=image_processor)
    return model, processor


def _weights(where: str, local_files_only: bool, need) -> list[Path]:
    """The safetensors files: model.safetensors, or an index and its shards (fetched for a hub id)."""
    single = _peek(where, WEIGHTS[0], required=False, local_only=local_files_only)
    if single is not None:
        return [single]
    index = need(WEIGHTS[1])
    if not Path(where).expanduser().is_dir():
        for shard in sorted(set(_json(index)["weight_map"].values())):
            need(shard)
    return [index]
