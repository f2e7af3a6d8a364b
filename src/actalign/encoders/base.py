"""The one interface every encoder implements (`Encoder`), and the choice of device.

Every encoder returns L2-normalised float32 rows: frames (T, d), texts (K, d), and carries the
affinity calibration of Eq. 9 and an `identity` string that names the exact weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from actalign.errors import ActAlignError

__all__ = ["Encoder", "select_device"]


class Encoder(ABC):
    """Embeds frames and texts into one space.

    identity:   names the weights and numeric precision (model id + revision, or a hash of a
                local checkpoint, + dtype); embeddings with equal identity are interchangeable.
    scale, bias: Eq. 9 calibration; bias None means the linear map (1 + cos) / 2 is used.
    decode_size: what the video decoder should resize frames to (int: shorter side, or (w, h)).
    text_encoding: "trained" (each text alone, as the model was trained) or "authors" (the
                original scripts' batching; see `ImageTextEncoder.encode_texts`).
    """

    identity: str
    scale: float
    bias: float | None
    dim: int
    batch_size: int
    decode_size: int | tuple[int, int] | None = None
    text_encoding: str = "trained"  # or "authors": one tokenizer call per candidate's steps

    @abstractmethod
    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """frames (B, H, W, 3) uint8 RGB -> (B, d) float32, unit rows."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """texts (K,) -> (K, d) float32, unit rows."""

    def factory(self) -> Callable[[], Encoder]:
        """A picklable callable that builds this encoder again (in another process: a Ray actor).
        The default calls the class without arguments; encoders with options override it."""
        return type(self)

    def encode_frames(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """A stream of frame batches -> (T, d); the next batch decodes while this one encodes."""
        from actalign.prefetch import prefetch

        out = [self.encode_images(b) for b in prefetch(batches)]
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)


def select_device(device: str | None = None) -> str:
    """The requested device, or the best available: cuda > mps > cpu."""
    import re

    import torch

    if device:
        device = device.strip().lower()
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
            raise ActAlignError(f"Unknown device {device!r}; use cpu, cuda, cuda:N or mps.")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ActAlignError(
                f"Device {device!r} was requested but CUDA is not available; use `device=cpu`."
            )
        if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
            raise ActAlignError(
                f"Device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)."
            )
        if device == "mps" and not torch.backends.mps.is_available():
            raise ActAlignError("Device 'mps' was requested but is not available; use `device=cpu`.")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"
