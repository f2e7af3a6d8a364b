"""transformers backend: SigLIP, SigLIP 2 and CLIP through AutoModel / AutoProcessor.

What happens after the load (encoding, precision, int8, the pixel fast path) is shared with the
plain-torch SigLIP loader (`native`) in `common`; its names stay importable from here.
"""

from __future__ import annotations

from actalign.encoders.common import (  # noqa: F401  (the names other modules import from here)
    FAMILIES,
    SIGLIP_TEXT_LENGTH,
    TEXT_ENCODINGS,
    ImageTextEncoder,
    _features,
    _gelu_in_place,
    _oom_guard,
    _pixel_plan,
    _quantise,
    _trained_on_lowercase,
    _unit,
    dtype_name_for,
)
from actalign.hub import load_checkpoint


class TransformersEncoder(ImageTextEncoder):
    """A transformers image-text model (SigLIP / SigLIP 2 / CLIP families)."""

    def _import_stack(self) -> None:
        _import_stack()

    def _load(self, name_or_path: str) -> tuple:
        model, processor, source = _load(name_or_path)
        return model, processor, model.config.model_type, source

    def _activations(self) -> tuple[type, ...]:
        from transformers.activations import GELUTanh

        return (GELUTanh,)


def _import_stack():
    """torch and the parts of transformers every model load needs (its modeling and processing
    code, which pull in most of the stack), imported here so that `startup` can time them apart
    from the load itself. Returns torch."""
    import torch
    import transformers.modeling_utils
    import transformers.processing_utils  # noqa: F401
    from transformers import AutoModel, AutoProcessor  # noqa: F401

    return torch


def _load(name: str):
    """(model, processor, source identity) from a local directory or a hub id (`actalign.hub`)."""
    (model, processor), identity = load_checkpoint(name, _from_pretrained, "model")
    return model, processor, identity


def _from_pretrained(where: str, local_files_only: bool):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(where, local_files_only=local_files_only)
    processor = AutoProcessor.from_pretrained(where, local_files_only=local_files_only)
    return model, processor
