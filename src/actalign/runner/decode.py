"""The decode stage, shared by the engines: one clip's sampled frames at the encoder's input size,
or its frame embeddings straight from the cache."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from actalign.runner.plan import Clip
from actalign.video import Sampling, iter_frames


@dataclass(frozen=True)
class DecodeOptions:
    """What decoding needs to know of the run and the encoder (plain data, sent to workers)."""

    fps: float | None
    decode_size: int | tuple[int, int] | None
    chunk: int  # frames per message
    cache_dir: str | None  # None: no cache
    identity: str  # the encoder's, for cache keys
    threads: int = 0  # decoder threads per clip (1 when several worker processes share the cores)

    def sampling(self, clip: Clip) -> Sampling:
        return Sampling(fps=self.fps, start=clip.start, end=clip.end)

    def cache_key(self, clip: Clip) -> str:
        """The frame path's one key (`embed.frame_key`), as classify and locate compute it."""
        from actalign.embed import frame_key

        return frame_key(self.identity, clip.video, self.sampling(clip), self.decode_size)


@dataclass(frozen=True)
class Failure:
    """What an engine yields for a clip that could not be done: the clip and one sentence."""

    clip: Clip
    reason: str


@dataclass
class Cached:
    """A clip whose embeddings were in the cache."""

    frames: np.ndarray  # (T, d)
    timestamps: np.ndarray
    end: float
    warnings: list[str]


@dataclass
class Chunk:
    """Some decoded frames of a clip (uint8 (B, H, W, 3)) and their times."""

    frames: np.ndarray
    timestamps: np.ndarray


@dataclass
class Done:
    """The end of a clip's frames: where its span ends, the decoder's warnings (stored with the
    cache entry), its cache key, and notes for this run only (a damaged entry computed again)."""

    end: float
    warnings: list[str]
    key: str | None
    notes: list[str] = field(default_factory=list)


def decode_clip(clip: Clip, options: DecodeOptions) -> Iterator[Cached | Chunk | Done]:
    """Cached embeddings, or the clip's frames in chunks followed by Done. Raises ActAlignError
    for a clip that cannot be read."""
    key = None
    if options.cache_dir is not None:
        from actalign.embed import read_entry
        from actalign.encoders.cache import EmbeddingCache

        key = options.cache_key(clip)
        hit, notes = read_entry(EmbeddingCache(options.cache_dir), key, clip.video)
        if hit is not None:
            yield Cached(hit.frames, hit.timestamps, hit.end, list(hit.warnings))
            return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = iter_frames(
            clip.video, options.sampling(clip), batch_size=options.chunk, resize=options.decode_size
        )
        last = None
        for batch in stream:
            last = batch.timestamps[-1]
            yield Chunk(np.ascontiguousarray(batch.frames), batch.timestamps)
    end = stream.stats.end if stream.stats.end is not None else float(last)
    yield Done(end, [str(w.message) for w in caught], key, notes if key is not None else [])
