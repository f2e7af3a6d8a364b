"""Video and text embeddings with the cache: decode -> encode, each stage overlapped with the other.

emb = embed_video(encoder, "clip.mp4", Sampling(fps=10), cache)   # frames (T, d), timestamps (T,)
steps = embed_texts(encoder, ["jump in basketball", ...], cache)  # (K, d)
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from actalign.encoders import Encoder
from actalign.encoders.cache import EmbeddingCache, make_key
from actalign.video import Sampling, fingerprint, iter_frames

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Produce `items` in a background thread, at most `depth` ahead of the consumer.

    PyAV and torch release the GIL, so decoding the next batch overlaps encoding this one and
    the slower stage sets the pace. Errors in the producer are raised in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_DONE, None))
        except BaseException as e:
            q.put((_DONE, e))

    worker = threading.Thread(target=produce, daemon=True, name="actalign-prefetch")
    worker.start()
    try:
        while True:
            item, error = q.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


@dataclass(frozen=True)
class VideoEmbedding:
    frames: np.ndarray  # (T, d) float32, unit rows
    timestamps: np.ndarray  # (T,) seconds
    cached: bool = False

    @property
    def fps(self) -> float:
        """Effective sampling rate (frames per second of video)."""
        if len(self.timestamps) < 2:
            return 1.0
        span = self.timestamps[-1] - self.timestamps[0]
        return (len(self.timestamps) - 1) / span if span > 0 else 1.0


def video_key(encoder: Encoder, path: str | os.PathLike, sampling: Sampling) -> str:
    return make_key("frames", fingerprint(path), encoder.identity, sampling.key(), encoder.decode_size)


def embed_video(
    encoder: Encoder,
    path: str | os.PathLike,
    sampling: Sampling | None = None,
    cache: EmbeddingCache | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> VideoEmbedding:
    """Frame embeddings of a video; from the cache when this video, model and sampling were seen."""
    sampling = sampling or Sampling()
    key = video_key(encoder, path, sampling) if cache is not None else None
    if cache is not None:
        hit = cache.get_frames(key)
        if hit is not None:
            return VideoEmbedding(hit[0], hit[1], cached=True)
    embeddings, stamps = [], []
    batches = iter_frames(path, sampling, batch_size=encoder.batch_size, resize=encoder.decode_size)
    for batch in prefetch(batches):
        embeddings.append(encoder.encode_images(batch.frames))
        stamps.append(batch.timestamps)
        if on_frames is not None:
            on_frames(len(batch.timestamps))
    frames, timestamps = np.concatenate(embeddings), np.concatenate(stamps)
    if cache is not None:
        cache.put_frames(key, frames, timestamps)
    return VideoEmbedding(frames, timestamps)


def embed_texts(encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache | None = None) -> np.ndarray:
    """(K, d) text embeddings; each distinct text is encoded once and cached."""
    unique = list(dict.fromkeys(texts))
    keys = {t: make_key("text", encoder.identity, t) for t in unique}
    found = cache.get_texts(list(keys.values())) if cache is not None else {}
    missing = [t for t in unique if keys[t] not in found]
    if missing:
        fresh = encoder.encode_texts(missing)
        new = {keys[t]: v for t, v in zip(missing, fresh, strict=False)}
        if cache is not None:
            cache.put_texts(new)
        found.update(new)
    return np.stack([found[keys[t]] for t in texts]).astype(np.float32)
