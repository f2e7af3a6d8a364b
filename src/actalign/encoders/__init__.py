"""Image-text encoders behind one interface, and a factory that names them.

    encoder = load_encoder("google/siglip-so400m-patch14-384")   # hub id (downloads once)
    encoder = load_encoder("siglip-so400m")                        # a short name from MODELS
    encoder = load_encoder("/models/my-siglip")                    # a save_pretrained directory

Every encoder returns L2-normalised float32 rows: frames (T, d), texts (K, d), and carries the
affinity calibration of Eq. 9 (`scale` = exp(logit_scale), `bias` = logit_bias, None for models
trained without one) and an `identity` string that names the exact weights, for cache keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actalign.encoders.base import Encoder
from actalign.errors import ActAlignError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "MODEL_INFO",
    "ModelInfo",
    "backends",
    "load_encoder",
    "on_disk",
    "register_backend",
]

# Short names for the checkpoints we know; any other hub id or local directory works as well.
MODELS: dict[str, str] = {
    "siglip-so400m": "google/siglip-so400m-patch14-384",  # the paper's model
    "siglip2-so400m": "google/siglip2-so400m-patch14-384",
    "siglip-base": "google/siglip-base-patch16-224",
    "siglip2-base": "google/siglip2-base-patch16-224",
    "clip-b32": "openai/clip-vit-base-patch32",
    "clip-b16": "openai/clip-vit-base-patch16",
    "clip-l14": "openai/clip-vit-large-patch14",
}
DEFAULT_MODEL = "google/siglip-so400m-patch14-384"


@dataclass(frozen=True)
class ModelInfo:
    """What `actalign models` says of a short name: its backend, its parameter count (vision and
    text towers, as published) and the width of its embeddings."""

    backend: str
    parameters: int
    dim: int


MODEL_INFO: dict[str, ModelInfo] = {
    "siglip-so400m": ModelInfo("native SigLIP", 878_000_000, 1152),
    "siglip2-so400m": ModelInfo("transformers SigLIP 2", 1_136_000_000, 1152),
    "siglip-base": ModelInfo("native SigLIP", 203_000_000, 768),
    "siglip2-base": ModelInfo("transformers SigLIP 2", 375_000_000, 768),
    "clip-b32": ModelInfo("transformers CLIP", 151_000_000, 512),
    "clip-b16": ModelInfo("transformers CLIP", 150_000_000, 512),
    "clip-l14": ModelInfo("transformers CLIP", 428_000_000, 768),
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def on_disk(hub_id: str) -> bool:
    """Whether a hub checkpoint is in the local Hugging Face cache already (its config and its
    weights), looked up offline: nothing is downloaded."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False

    def cached(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(hub_id, filename), str)
        except Exception:  # a malformed cache or id: not usable offline either
            return False

    return cached("config.json") and any(cached(f) for f in WEIGHT_FILES)


def backends() -> list[str]:
    """The registered backend prefixes (`load_encoder("<prefix>:<name>")`), "hf" first."""
    return list(_BACKENDS)


_BACKENDS: dict[str, Callable[..., Encoder]] = {}


def register_backend(prefix: str, factory: Callable[..., Encoder]) -> None:
    """Make `load_encoder("<prefix>:<name>")` build encoders with `factory(name, **options)`."""
    _BACKENDS[prefix] = factory


def _hf_backend(name: str, **options) -> Encoder:
    """SigLIP checkpoints in safetensors load without transformers (`native`); the rest, and all
    of them with ACTALIGN_LOADER=transformers, through transformers."""
    from actalign.encoders.native import LOADER_ENV, NativeEncoder, loader_choice, native_reason

    choice = loader_choice()
    if choice != "transformers":
        reason = native_reason(name)
        if reason is None:
            return NativeEncoder(name, **options)
        if choice == "native":
            raise ActAlignError(
                f"{name} cannot load without transformers: {reason}; unset {LOADER_ENV} to load it "
                "through transformers."
            )
    from actalign.encoders.hf import TransformersEncoder

    return TransformersEncoder(name, **options)


register_backend("hf", _hf_backend)


def load_encoder(
    name_or_path: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    **options,
) -> Encoder:
    """Build an encoder from a short name, a hub id, a local directory, or "<backend>:<name>".

    device: "cuda", "cuda:N", "mps", "cpu" (default: the best available, in that order).
    dtype: "float32", "float16", "bfloat16", "int8" (CPU) (default: half precision on GPU; on CPU
    bfloat16 where it has bfloat16 matrix units, float32 elsewhere: `encoders.cpu`).
    batch_size: frames per forward pass (default 64 on GPU, 16 on CPU).
    options: backend options, for the SigLIP / CLIP backend `text_encoding` ("trained" or
    "authors", see `ImageTextEncoder.encode_texts`), `compile` (torch.compile the vision tower)
    and `towers` ("both", or "text": the text tower alone, for embedding texts; encode_images
    then refuses). SigLIP checkpoints in safetensors load without transformers (`native`);
    ACTALIGN_LOADER=transformers loads every checkpoint through transformers.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ActAlignError("Give a model: a short name (actalign models), a hub id or a local directory.")
    prefix, sep, rest = name_or_path.partition(":")
    if sep and prefix in _BACKENDS and not rest.startswith("//"):
        factory, name = _BACKENDS[prefix], rest
    else:
        factory, name = _BACKENDS["hf"], name_or_path
    name = MODELS.get(name, name)
    if factory is _BACKENDS["hf"]:  # other backends name their models their own way
        _check_name(name)
    return factory(name, device=device, dtype=dtype, batch_size=batch_size, **options)


def _check_name(name: str) -> None:
    """A name that is neither a folder, a hub id (org/name) nor a short name is a typo."""
    from pathlib import Path

    if "/" in name or Path(name).expanduser().is_dir() or name.startswith((".", "~")):
        return
    import difflib

    close = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ActAlignError(
        f"Unknown model {name!r}: not a short name (actalign models lists them), a hub id "
        f"(org/name) or a folder.{hint}"
    )
