"""What the baselines share beyond loading (`actalign.hub`): their precision, parameter counts,
and their frames (uint8 checks, the centres of equal segments)."""

from __future__ import annotations

import numpy as np

from actalign.errors import ActAlignError


def resolve_dtype(dtype: str | None, device: str):
    """The torch dtype a baseline runs in: as the encoders choose it (`--dtype`, else half on a GPU
    and the CPU's own choice), but never int8 (these models are not quantised here)."""
    import torch

    from actalign.encoders.hf import dtype_name_for

    name = dtype_name_for(dtype, device)
    if name == "int8":
        raise ActAlignError("`dtype=int8` applies to the SigLIP/CLIP encoders; run the baselines in float32.")
    return getattr(torch, name)


def dtype_kwargs(dtype) -> dict:
    """from_pretrained's argument for loading straight into `dtype` (no float32 copy of a bfloat16
    checkpoint beside it): `dtype` in transformers 5, `torch_dtype` in 4."""
    import transformers

    return {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": dtype}


def parameter_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def uint8_frames(frames, what: str = "frames") -> np.ndarray:
    """frames as one (N, H, W, 3) uint8 array (a list of equal-sized frames is stacked)."""
    try:
        array = np.asarray(frames)
    except ValueError:
        raise ActAlignError(f"The {what} must all have the same size.") from None
    if array.ndim != 4 or array.shape[-1] != 3 or len(array) == 0:
        raise ActAlignError(f"The {what} must be (N, H, W, 3) RGB arrays, got shape {array.shape}.")
    if array.dtype != np.uint8:
        raise ActAlignError(f"The {what} must be uint8 RGB, got {array.dtype}.")
    return array


def segment_centres(n_available: int, count: int) -> np.ndarray:
    """Indices of `count` frames spread uniformly over `n_available`: the middle frame of each of
    `count` equal segments -- TSN's test-time sampling, which X-CLIP's evaluation uses (mmaction's
    SampleFrames with clip_len 1, num_clips = the model's frames, test_mode). A clip with fewer
    frames than `count` repeats frames, in order."""
    if isinstance(n_available, bool) or int(n_available) != n_available or n_available < 1:
        raise ActAlignError(f"The clip has no frames to sample (got {n_available}).")
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise ActAlignError(f"The number of frames to sample must be a whole number >= 1, got {count!r}.")
    n, k = int(n_available), int(count)
    return ((2 * np.arange(k, dtype=np.int64) + 1) * n) // (2 * k)  # floor((i + 1/2) n / k), exactly
