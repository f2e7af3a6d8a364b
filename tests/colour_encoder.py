"""A deterministic encoder for planted-structure tests: frames painted in a palette colour map to
that colour's direction, and texts naming a colour map to the same direction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actalign.encoders import Encoder

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "magenta": (210, 40, 200),
    "cyan": (40, 210, 210),
}
NAMES = list(PALETTE)
# Code words name a colour only together with their domain: "two in zone-b" is NAMES[(1 + 3) % 6].
CODEWORDS = ["one", "two", "three", "four", "five", "six"]
DOMAIN_OFFSET = {"zone-a": 0, "zone-b": 3}


class ColourEncoder(Encoder):
    identity = "test:colour-v1"
    scale = 10.0
    bias = -5.0
    batch_size = 8
    decode_size = 16
    dim = len(PALETTE) + 1  # the last direction: texts that name no colour

    def __init__(self) -> None:
        self.image_calls = 0

    def _onehot(self, index: int) -> np.ndarray:
        v = np.full(self.dim, 0.05, np.float32)
        v[index] = 1.0
        return v / np.linalg.norm(v)

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        self.image_calls += 1
        colours = np.array(list(PALETTE.values()), np.float32)
        means = frames.reshape(len(frames), -1, 3).mean(axis=1)
        nearest = np.argmin(((means[:, None, :] - colours[None]) ** 2).sum(-1), axis=1)
        return np.stack([self._onehot(i) for i in nearest])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for t in texts:
            words = t.lower().split()
            hit = next((i for i, name in enumerate(NAMES) if name in words), None)
            code = next((i for i, w in enumerate(CODEWORDS) if w in words), None)
            domain = next((off for d, off in DOMAIN_OFFSET.items() if d in words), None)
            if hit is None and code is not None and domain is not None:
                hit = (code + domain) % len(NAMES)
            out.append(self._onehot(self.dim - 1 if hit is None else hit))
        return np.stack(out)
