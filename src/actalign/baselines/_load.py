"""Loading a baseline's checkpoint from a folder or a hub id, with the encoders' conventions:
a hub id is looked up in the local cache first and goes to the network only when it is not there
(an unreachable hub is one clear error within seconds); a folder is identified by a hash of its
files, a hub id by its commit."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from actalign.encoders.hf import _check_hub_reachable, _hub_commit, checkpoint_hash
from actalign.errors import ActAlignError

T = TypeVar("T")


class _NotCached(Exception):
    pass


@contextmanager
def quiet_transformers():
    """transformers' chatter (backend fallbacks, unused weights of a head) is not the user's concern."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0].rstrip(".")[:200] if text else type(e).__name__


def load_checkpoint(name: str, load: Callable[[str, bool], T], what: str) -> tuple[T, str]:
    """(load(where, local_files_only), source identity) for a folder or a hub id.

    `load` raises OSError / ValueError / KeyError when the files are not there (or not loadable);
    `what` names the model in errors ("X-CLIP model", "VLM")."""
    name = str(name).strip()
    path = Path(name).expanduser()
    if path.is_dir():
        return _attempt(load, str(path), False, name, what), f"dir:{checkpoint_hash(path)}"
    if not name or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ActAlignError(
            f"No {what} folder at {path}; give a folder saved with save_pretrained or a hub id."
        )
    try:
        loaded = _attempt(load, name, True, name, what)
    except _NotCached:
        _check_hub_reachable(name)
        loaded = _attempt(load, name, False, name, what)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    return loaded, f"hf:{name}@{_hub_commit(name, model)}"


def _attempt(load, where: str, local_files_only: bool, name: str, what: str):
    from actalign.scripts.local import _hub_validation_error

    with quiet_transformers():
        try:
            return load(where, local_files_only)
        except (OSError, ValueError, KeyError, _hub_validation_error()) as e:
            if local_files_only:
                raise _NotCached() from None
            raise ActAlignError(
                f"Could not load the {what} {name!r}: {first_line(e)}. Check the id or path; a hub id "
                "needs the internet once (then it is cached), or pass a folder saved with save_pretrained."
            ) from None


def resolve_dtype(dtype: str | None, device: str):
    """The torch dtype a baseline runs in: as the encoders choose it (`--dtype`, else half on a GPU
    and the CPU's own choice), but never int8 (these models are not quantised here)."""
    import torch

    from actalign.encoders.hf import _resolve_dtype

    name = _resolve_dtype(dtype, device)
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
