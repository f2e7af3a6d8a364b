"""How an index stores frame embeddings: float32, or half precision (float16, or bfloat16 kept
as the upper 16 bits of float32 in uint16, since numpy has no bfloat16). numpy only."""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "bfloat16", "float16")  # in this order: the C kernel's kinds 0, 1, 2
STORED = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def to_stored(vectors: np.ndarray, precision: str) -> np.ndarray:
    """float32 rows -> what a shard of this precision holds (bfloat16: the upper 16 bits, rounded
    to nearest even, as uint16)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if precision == "bfloat16":
        bits = vectors.view(np.uint32)
        rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
        return (rounded >> np.uint32(16)).astype(np.uint16)
    return vectors.astype(STORED[precision])


def widen(stored: np.ndarray, precision: str) -> np.ndarray:
    """A shard's rows -> float32."""
    if precision == "bfloat16":
        out = np.empty(np.shape(stored), dtype=np.uint32)
        np.left_shift(stored, 16, out=out, dtype=np.uint32)  # one pass, no uint32 copy first
        return out.view(np.float32)
    return np.asarray(stored, dtype=np.float32)
