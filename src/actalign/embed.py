"""The one frame path: decode -> encode -> cache, with one cache key, for every command.

    emb = embed_video(encoder, "clip.mp4", Sampling(fps=10), cache)   # frames (T, d), timestamps (T,)
    for frames, stamps in FrameStream(encoder, "match.mp4", Sampling(fps=2), cache):  # block by block
        ...
    steps = embed_texts(encoder, ["jump in basketball", ...], cache)  # (K, d)

`ActAlign` (one clip), the local and Ray engines of the batch runner (`runner.decode`) and `locate`
all key a video's embeddings with `frame_key` and store them as one cache entry (`EmbeddingCache.
put_video`): what one command embedded, the others read. Decoding runs in a background thread while
the model encodes. The decoder's warnings (damaged packets) are kept with the entry and repeated
when it is read.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from actalign.encoders import Encoder
from actalign.encoders.cache import FRAME_BLOCK, EmbeddingCache, VideoEntry, make_key
from actalign.prefetch import prefetch
from actalign.video import ArrayVideo, Sampling, as_video, expected_frames, fingerprint, iter_frames, probe

__all__ = [
    "EntryWriter",
    "FrameStream",
    "VideoEmbedding",
    "embed_text_groups",
    "embed_texts",
    "embed_video",
    "frame_key",
    "read_blocks",
    "read_entry",
    "write_entry",
]

# /3: frames scaled as the processor scales them (RGB first, then bicubic). Bump it whenever the
# pixels a model sees change: entries under an older version are never read again.
FRAMES_VERSION = "frames/3"


@dataclass(frozen=True)
class VideoEmbedding:
    """Frame embeddings of one video at one sampling.

    frames: (T, d) float32 unit rows; timestamps: (T,) seconds of the sampled frames;
    end: where the embedded span ends in seconds (the last decoded frame's end, clipped to the
    sampling's end), so the last step's segment never runs past the video; warnings: what the
    decoder reported (damaged packets skipped, repaired timestamps).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    end: float
    cached: bool = False
    warnings: tuple[str, ...] = field(default=())

    @property
    def fps(self) -> float:
        """Effective sampling rate (frames per second of video)."""
        return measured_fps(self.timestamps)


def measured_fps(timestamps: np.ndarray) -> float:
    """The sampling rate of frames at these times (T,): (T - 1) / their span; 1 for fewer than 2."""
    if len(timestamps) < 2:
        return 1.0
    span = float(timestamps[-1] - timestamps[0])
    return (len(timestamps) - 1) / span if span > 0 else 1.0


def frame_key(identity: str, video, sampling: Sampling, decode_size) -> str:
    """THE cache key of a video's frame embeddings: its content, the encoder (weights and dtype),
    the sampling, the decoded size, and the pixel pipeline's version."""
    size = list(decode_size) if isinstance(decode_size, tuple) else decode_size
    return make_key(FRAMES_VERSION, fingerprint(video), identity, sampling.key(), size)


def video_key(encoder: Encoder, video, sampling: Sampling) -> str:
    """`frame_key` for this encoder."""
    return frame_key(encoder.identity, video, sampling, encoder.decode_size)


class FrameStream:
    """A video's frame embeddings, block by block: from the cache when they are there, else
    decoded and encoded (and stored, when a cache is given). Iterate for (frames (B, d),
    timestamps (B,)); afterwards `end`, `warnings` and `decoded` (False: read from the cache) are
    set. Memory holds one block, whatever the video's length.

    on_total(n) is called once with the expected number of frames, on_frames(k) after each block.
    """

    def __init__(
        self,
        encoder: Encoder,
        video,
        sampling: Sampling | None = None,
        cache: EmbeddingCache | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> None:
        self.encoder, self.video = encoder, as_video(video)
        self.sampling = sampling or Sampling()
        self.cache = cache
        self.key = video_key(encoder, self.video, self.sampling) if cache is not None else None
        self.on_frames, self.on_total = on_frames, on_total
        self.end: float | None = None
        self.warnings: list[str] = []
        self.decoded = False
        self.timestamps: np.ndarray | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        index = self.cache.get_index(self.key) if self.cache is not None else None
        if index is not None:
            blocks = self._read(index)
            if blocks is not None:
                yield from blocks
                return
            warn_damaged(self.video)
        yield from self._decode()

    def sampled_fps(self) -> float:
        """The rate the frames are sampled at before they are read: measured from the cached
        entry's timestamps (as `VideoEmbedding.fps`), else the requested rate capped at the
        video's own (what sampling keeps of it)."""
        index = self.cache.get_index(self.key) if self.cache is not None else None
        if index is not None:
            return measured_fps(index.timestamps)
        from actalign.video import sampled_rate

        return sampled_rate(probe(self.video), self.sampling)

    def _read(self, index) -> Iterator | None:
        """The cached blocks, or None when the first is missing (then the video is decoded again)."""
        reader = read_blocks(self.cache, self.key, index)
        first = next(reader)
        if first is None:
            return None

        def blocks():
            if self.on_total is not None:
                self.on_total(len(index.timestamps))
            for i in range(index.blocks):
                frames = first if i == 0 else next(reader)
                if frames is None:  # the one reader's rule: computed again, from where it broke
                    warn_damaged(self.video)
                    yield from self._decode(skip=i * FRAME_BLOCK)
                    return
                stamps = index.timestamps[i * FRAME_BLOCK : (i + 1) * FRAME_BLOCK]
                if self.on_frames is not None:
                    self.on_frames(len(stamps))
                yield frames, stamps
            self.end, self.warnings, self.timestamps = index.end, list(index.warnings), index.timestamps
            for w in self.warnings:
                warnings.warn(w, stacklevel=2)

        return blocks()

    def _decode(self, skip: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Decode, encode and store the whole entry; yield its frames after the first `skip`
        (already given from a cache entry that broke there)."""
        enc = self.encoder
        if self.on_total is not None and not skip:
            self.on_total(expected_frames(probe(self.video), self.sampling))
        stream = iter_frames(self.video, self.sampling, batch_size=enc.batch_size, resize=enc.decode_size)
        stamps_all: list[np.ndarray] = []
        writer = EntryWriter(self.cache, self.key) if self.cache is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in prefetch(stream):
                embedded = enc.encode_images(batch.frames)
                stamps_all.append(batch.timestamps)
                if writer is not None:
                    writer.add(embedded)
                seen, skip = skip, max(0, skip - len(embedded))
                if seen >= len(embedded):
                    continue
                if self.on_frames is not None:
                    self.on_frames(len(batch.timestamps) - seen)
                yield embedded[seen:], batch.timestamps[seen:]
        self.decoded = True
        self.timestamps = np.concatenate(stamps_all) if stamps_all else np.zeros(0)
        if self.on_total is not None:  # the declared count was an estimate: the bar ends at 100%
            self.on_total(len(self.timestamps))
        self.end = stream.stats.end if stream.stats.end is not None else float(self.timestamps[-1])
        self.warnings = [str(w.message) for w in caught]
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if writer is not None:
            writer.close(self.timestamps, self.end, self.warnings)

    def frames_between(self, first: int, last: int) -> np.ndarray | None:
        """Embeddings (last - first + 1, d) of frames first..last, from the cache; None without one."""
        if self.cache is None or self.cache.get_index(self.key) is None:
            return None
        out = []
        for i in range(first // FRAME_BLOCK, last // FRAME_BLOCK + 1):
            block = self.cache.get_block(self.key, i)
            if block is None:
                return None
            lo = max(first - i * FRAME_BLOCK, 0)
            hi = min(last - i * FRAME_BLOCK, len(block) - 1)
            out.append(block[lo : hi + 1])
        return np.concatenate(out)


def damaged_note(video) -> str:
    """What every command says of a damaged cache entry (it is then computed again)."""
    return f"The cached embeddings of {video} were damaged (a block missing or unreadable); computed again."


def warn_damaged(video) -> None:
    """Say `damaged_note` once, as a warning."""
    warnings.warn(damaged_note(video), stacklevel=3)


class EntryWriter:
    """The one writer of a video's cache entry: its frame embeddings in blocks of FRAME_BLOCK as
    they fill, then the index (timestamps, end, the decoder's warnings) that makes it readable.

        w = EntryWriter(cache, key); w.add(frames (B, d)); ...; w.close(timestamps (T,), end, warnings)
    """

    def __init__(self, cache: EmbeddingCache, key: str) -> None:
        self.cache, self.key = cache, key
        self.held: list[np.ndarray] = []
        self.count = self.written = 0

    def add(self, frames: np.ndarray) -> None:
        """Frame embeddings (B, d) that follow those added before; full blocks are written now."""
        self.held.append(frames)
        self.count += len(frames)
        while self.count >= FRAME_BLOCK:
            whole = np.concatenate(self.held)
            self.cache.put_block(self.key, self.written, whole[:FRAME_BLOCK])
            self.written += 1
            self.held = [whole[FRAME_BLOCK:]] if len(whole) > FRAME_BLOCK else []
            self.count = len(whole) - FRAME_BLOCK

    def close(self, timestamps: np.ndarray, end: float, warnings_: Sequence[str] = ()) -> None:
        """The last, partial block, then the index (timestamps (T,), end, warnings): readable now."""
        if self.count:
            self.cache.put_block(self.key, self.written, np.concatenate(self.held))
        self.cache.put_index(self.key, timestamps, end, warnings_)


def write_entry(
    cache: EmbeddingCache, key: str, frames: np.ndarray, timestamps: np.ndarray, end: float, warnings_=()
) -> None:
    """A whole video's frame embeddings (T, d) as one entry, through the one writer."""
    writer = EntryWriter(cache, key)
    writer.add(frames)
    writer.close(timestamps, end, warnings_)


def read_blocks(cache: EmbeddingCache, key: str, index) -> Iterator[np.ndarray | None]:
    """The one reader: an entry's blocks (B, d) in order; None in place of a missing or damaged
    block (then the reader stops: the caller computes the entry again)."""
    for i in range(index.blocks):
        block = cache.get_block(key, i)
        yield block
        if block is None:
            return


def read_entry(cache: EmbeddingCache, key: str, video) -> tuple[VideoEntry | None, list[str]]:
    """A whole cache entry (frames (T, d) read block by block), or None; with a note when the
    entry's index is there but a block is missing or damaged (the caller computes it again: the
    one reader's rule)."""
    index = cache.get_index(key)
    if index is None:
        return None, []
    blocks = list(read_blocks(cache, key, index))
    frames = np.concatenate(blocks) if blocks and blocks[-1] is not None else None
    if frames is None and not blocks:
        frames = np.zeros((0, 0), np.float32)
    if frames is None or len(frames) != len(index.timestamps):
        return None, [damaged_note(video)]
    return VideoEntry(frames, index.timestamps, index.end, index.warnings), []


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
    stream = FrameStream(encoder, path, sampling, cache, on_frames, on_total)
    parts = list(stream)
    frames = (
        np.concatenate([p[0] for p in parts])
        if parts
        else np.zeros((0, getattr(encoder, "dim", 0)), np.float32)
    )
    return VideoEmbedding(
        frames, stream.timestamps, stream.end, cached=not stream.decoded, warnings=tuple(stream.warnings)
    )


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
