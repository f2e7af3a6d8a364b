"""Video and text embeddings with the cache: decode -> encode, each stage overlapped with the other.

emb = embed_video(encoder, "clip.mp4", Sampling(fps=10), cache)   # frames (T, d), timestamps (T,)
steps = embed_texts(encoder, ["jump in basketball", ...], cache)  # (K, d)
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from actalign.encoders import Encoder
from actalign.encoders.cache import EmbeddingCache, make_key
from actalign.video import ArrayVideo, Sampling, as_video, expected_frames, fingerprint, iter_frames, probe

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
    """Frame embeddings of one video at one sampling.

    frames: (T, d) float32 unit rows; timestamps: (T,) seconds of the sampled frames;
    end: where the embedded span ends in seconds (the last decoded frame's end, clipped to the
    sampling's end), so the last step's segment never runs past the video.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    end: float
    cached: bool = False

    @property
    def fps(self) -> float:
        """Effective sampling rate (frames per second of video)."""
        if len(self.timestamps) < 2:
            return 1.0
        span = self.timestamps[-1] - self.timestamps[0]
        return (len(self.timestamps) - 1) / span if span > 0 else 1.0


def video_key(encoder: Encoder, video, sampling: Sampling) -> str:
    """Cache key of a video's frame embeddings: its content, the encoder, the sampling."""
    # /3: frames scaled as the processor scales them (RGB first, then bicubic)
    return make_key("frames/3", fingerprint(video), encoder.identity, sampling.key(), encoder.decode_size)


def embed_video(
    encoder: Encoder,
    path: str | os.PathLike | ArrayVideo,
    sampling: Sampling | None = None,
    cache: EmbeddingCache | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> VideoEmbedding:
    """Frame embeddings of a video; from the cache when this video, model and sampling were seen.

    on_total(n) is called once with the expected number of frames (for a progress bar), and
    on_frames(k) after each encoded batch of k frames.
    """
    sampling = sampling or Sampling()
    path = as_video(path)
    key = video_key(encoder, path, sampling) if cache is not None else None
    if cache is not None:
        hit = cache.get_frames(key)
        if hit is not None:
            if on_total is not None:
                on_total(len(hit[1]))
            if on_frames is not None:
                on_frames(len(hit[1]))
            return VideoEmbedding(hit[0], hit[1], hit[2], cached=True)
    stream = iter_frames(path, sampling, batch_size=encoder.batch_size, resize=encoder.decode_size)
    if on_total is not None:
        on_total(expected_frames(probe(path), sampling))
    embeddings, stamps = [], []
    for batch in prefetch(stream):
        embeddings.append(encoder.encode_images(batch.frames))
        stamps.append(batch.timestamps)
        if on_frames is not None:
            on_frames(len(batch.timestamps))
    frames, timestamps = np.concatenate(embeddings), np.concatenate(stamps)
    end = stream.stats.end if stream.stats.end is not None else float(timestamps[-1])
    if cache is not None:
        cache.put_frames(key, frames, timestamps, end)
    return VideoEmbedding(frames, timestamps, end)


def _text_key(encoder: Encoder, text: str) -> str:
    return make_key("text/2", encoder.identity, text)  # /2: SigLIP 2 fixed-resolution texts lower-cased


def embed_texts(encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache | None = None) -> np.ndarray:
    """(K, d) text embeddings, each text encoded on its own terms (the "trained" encoding); each
    distinct text is encoded once and cached."""
    if not texts:
        return np.empty((0, getattr(encoder, "dim", 0)), np.float32)
    unique = list(dict.fromkeys(texts))
    keys = {t: _text_key(encoder, t) for t in unique}
    found = cache.get_texts(list(keys.values())) if cache is not None else {}
    missing = [t for t in unique if keys[t] not in found]
    if missing:
        fresh = encoder.encode_texts(missing)
        new = {keys[t]: v for t, v in zip(missing, fresh, strict=True)}
        if cache is not None:
            cache.put_texts(new)
        found.update(new)
    return np.stack([found[keys[t]] for t in texts]).astype(np.float32)


def embed_text_groups(
    encoder: Encoder, groups: Sequence[Sequence[str]], cache: EmbeddingCache | None = None
) -> list[np.ndarray]:
    """Embeddings (K_g, d) of each group of texts (e.g. each candidate's steps).

    With the default "trained" encoding every distinct text of all groups is encoded once, in
    full batches. With the "authors" encoding each group is one tokenizer call (its embeddings
    depend on the group, so the group is part of the cache key), as the original scripts did.
    """
    if getattr(encoder, "text_encoding", "trained") != "authors":
        flat = [t for g in groups for t in g]
        everything = embed_texts(encoder, flat, cache)
        bounds = np.cumsum([0] + [len(g) for g in groups])
        return [everything[bounds[i] : bounds[i + 1]] for i in range(len(groups))]
    out = []
    for group in groups:
        keys = [
            make_key("text-authors", encoder.identity, json.dumps(list(group)), i) for i in range(len(group))
        ]
        found = cache.get_texts(keys) if cache is not None else {}
        if len(found) < len(keys):
            fresh = encoder.encode_texts(list(group))
            found = dict(zip(keys, fresh, strict=True))
            if cache is not None:
                cache.put_texts(found)
        out.append(np.stack([found[k] for k in keys]).astype(np.float32))
    return out
