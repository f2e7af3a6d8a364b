"""Video decoding and sampling on videos generated here (and the shared clips when present)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from actalign import video
from actalign.errors import ActAlignError
from actalign.video import Sampling
from media import SAMPLES, make_audio_only, make_video

RATES = [Fraction(25, 2), Fraction(30000, 1001), Fraction(30), Fraction(507, 17)]


def levels(frames: np.ndarray) -> list[int]:
    """Index of the planted grey level of each decoded frame."""
    grey = frames[:, :, :, :].reshape(len(frames), -1).mean(axis=1)
    return [round(g / 16) for g in grey]


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_probe_and_all_frames(tmp_path, rate):
    path = make_video(tmp_path / "v.mp4", n=30, fps=rate)
    info = video.probe(path)
    assert info.fps == pytest.approx(float(rate), rel=1e-6)
    assert info.frames == 30 and (info.width, info.height) == (64, 48)
    assert info.codec == "h264" and info.rotation == 0
    assert info.duration == pytest.approx(30 / float(rate), abs=0.05)
    got = video.read_frames(path)
    assert got.frames.shape == (30, 48, 64, 3) and got.frames.dtype == np.uint8
    np.testing.assert_allclose(got.timestamps, np.arange(30) / float(rate), atol=1e-3)
    assert levels(got.frames) == list(range(16))[:16] + list(range(16))[:14]


def test_sampling_by_fps_takes_first_frame_at_or_after_each_grid_point(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=90, fps=30)
    got = video.read_frames(path, Sampling(fps=2))
    np.testing.assert_allclose(got.timestamps, np.arange(6) * 0.5, atol=1e-3)
    assert [x % 16 for x in levels(got.frames)] == [(15 * i) % 16 for i in range(6)]


def test_sampling_odd_rate_in_seconds(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=40, fps=Fraction(25, 2))  # 0.08 s per frame
    got = video.read_frames(path, Sampling(fps=2))
    grid = np.arange(len(got.timestamps)) * 0.5
    assert (got.timestamps >= grid - 1e-6).all() and (got.timestamps < grid + 0.08).all()


def test_fps_above_native_gives_each_frame_once(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=20, fps=Fraction(30000, 1001))
    got = video.read_frames(path, Sampling(fps=120))
    assert len(got.timestamps) == 20 and (np.diff(got.timestamps) > 0).all()


@pytest.mark.parametrize("count", [1, 5, 20, 50])
def test_fixed_count(tmp_path, count):
    path = make_video(tmp_path / "v.mp4", n=20, fps=10)
    got = video.read_frames(path, Sampling(num_frames=count))
    assert len(got.timestamps) == min(count, 20)
    assert (np.diff(got.timestamps) > 0).all()
    if count == 5:  # five equal steps over the 2 s clip, first frame at or after each
        np.testing.assert_allclose(got.timestamps, [0.0, 0.4, 0.8, 1.2, 1.6], atol=1e-3)


def test_start_end_window_seeks(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=60, fps=10)
    got = video.read_frames(path, Sampling(fps=10, start=2.5, end=4.0))
    np.testing.assert_allclose(got.timestamps, np.arange(25, 40) / 10, atol=1e-3)
    assert [x for x in levels(got.frames)] == [i % 16 for i in range(25, 40)]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(tmp_path, rotation):
    path = make_video(tmp_path / "r.mp4", n=3, size=(64, 32), rotation=rotation, marker=True)
    info = video.probe(path)
    assert info.rotation == rotation
    got = video.read_frames(path)
    k = rotation // 90
    expected = np.zeros((32, 64), bool)
    expected[:8, :16] = True
    expected = np.rot90(expected, k)  # the way FFmpeg's autorotate shows it
    assert got.frames.shape[1:3] == expected.shape == info.display_size[::-1]
    red = (got.frames[0, :, :, 0] > 150) & (got.frames[0, :, :, 1] < 100)
    assert (red == expected).mean() > 0.95


def test_resize_on_decode(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=3, size=(128, 64))
    assert video.read_frames(path, resize=32).frames.shape == (3, 32, 64, 3)
    assert video.read_frames(path, resize=(40, 30)).frames.shape == (3, 30, 40, 3)
    rot = make_video(tmp_path / "r.mp4", n=3, size=(128, 64), rotation=90)
    assert video.read_frames(rot, resize=32).frames.shape == (3, 64, 32, 3)
    assert video.read_frames(rot, resize=(40, 30)).frames.shape == (3, 30, 40, 3)


def test_variable_frame_rate_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 1.2]
    path = make_video(tmp_path / "vfr.mp4", n=6, times=times)
    got = video.read_frames(path)
    np.testing.assert_allclose(got.timestamps, times, atol=2e-3)
    sampled = video.read_frames(path, Sampling(fps=4))  # grid 0, .25, .5, .75, 1.0
    np.testing.assert_allclose(sampled.timestamps, [0.0, 0.5, 1.2], atol=2e-3)


def test_video_with_audio(tmp_path):
    path = make_video(tmp_path / "a.mp4", n=20, fps=10, audio=True)
    assert len(video.read_frames(path).timestamps) == 20


def test_batches_are_bounded_and_complete(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=23, fps=10)
    batches = list(video.iter_frames(path, batch_size=5))
    assert [len(b.timestamps) for b in batches] == [5, 5, 5, 5, 3]
    whole = video.read_frames(path)
    np.testing.assert_array_equal(np.concatenate([b.frames for b in batches]), whole.frames)


def test_fingerprint_follows_content(tmp_path):
    a = make_video(tmp_path / "a.mp4", n=5)
    b = tmp_path / "b.mp4"
    b.write_bytes(a.read_bytes())
    c = make_video(tmp_path / "c.mp4", n=6)
    assert video.fingerprint(a) == video.fingerprint(b) != video.fingerprint(c)


# --------------------------------------------------------------------------- bad input


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(ActAlignError, match="No such video file"):
        video.probe(tmp_path / "nope.mp4")
    with pytest.raises(ActAlignError, match="folder"):
        video.probe(tmp_path)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(ActAlignError, match="not a video"):
        video.probe(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ActAlignError, match="not a video"):
        list(video.iter_frames(empty))


def test_audio_only(tmp_path):
    with pytest.raises(ActAlignError, match="no video stream"):
        video.probe(make_audio_only(tmp_path / "a.m4a"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": 3.0, "end": 2.0}, "before the end"),
        ({"start": 1.0, "end": 1.0}, "before the end"),
        ({"start": -1.0}, ">= 0"),
        ({"fps": 0}, "positive"),
        ({"fps": 2, "num_frames": 3}, "not both"),
        ({"num_frames": 0}, "at least 1"),
    ],
)
def test_bad_sampling(kwargs, match):
    with pytest.raises(ActAlignError, match=match):
        Sampling(**kwargs)


def test_start_past_the_end(tmp_path):
    path = make_video(tmp_path / "v.mp4", n=10, fps=10)
    with pytest.raises(ActAlignError, match="past the end"):
        list(video.iter_frames(path, Sampling(start=5.0)))
    with pytest.raises(ActAlignError, match="batch size"):
        list(video.iter_frames(path, batch_size=0))


def test_truncated_and_corrupt_files(tmp_path):
    """An mp4 cut before its index (moov at the end) cannot be opened: a clear error. A stream
    format without an index (MPEG-TS) cut or damaged partway gives back what decodes."""
    path = make_video(tmp_path / "v.mp4", n=60, fps=10, size=(128, 96))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ActAlignError, match="truncated, corrupt"):
        video.probe(cut)

    ts = make_video(tmp_path / "v.ts", n=60, fps=10, size=(128, 96))
    data = ts.read_bytes()
    cut_ts = tmp_path / "cut.ts"
    cut_ts.write_bytes(data[: int(len(data) * 0.6)])
    got = video.read_frames(cut_ts)
    assert 0 < len(got.timestamps) < 60 and (np.diff(got.timestamps) > 0).all()

    damaged = bytearray(data)
    middle = len(damaged) // 3
    damaged[middle : middle + 3000] = bytes((i * 7) % 256 for i in range(3000))
    bad_ts = tmp_path / "bad.ts"
    bad_ts.write_bytes(bytes(damaged))
    got = video.read_frames(bad_ts)
    assert 0 < len(got.timestamps) <= 60 and (np.diff(got.timestamps) > 0).all()


def test_warns_when_a_file_ends_before_its_stated_duration(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", n=10, fps=10)
    monkeypatch.setattr(video, "_duration", lambda container, stream: 5.0)  # it says 5 s, holds 1 s
    with pytest.warns(UserWarning, match="truncated"):
        got = video.read_frames(path)
    assert len(got.timestamps) == 10


# --------------------------------------------------------------------------- shared clips


def _manifest():
    path = SAMPLES / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/data is not beside this checkout")
@pytest.mark.parametrize("row", _manifest(), ids=lambda r: r["video"])
def test_shared_clips_sampled_timestamps_cover_the_clip(row):
    path = SAMPLES / row["video"]
    info = video.probe(path)
    got = video.read_frames(path, Sampling(fps=2), resize=64)
    ts = got.timestamps
    assert (np.diff(ts) > 0).all()
    assert ts[0] < 0.5 + 1e-6 and ts[-1] >= info.duration - 0.5 - 2 / info.fps
    assert got.frames.shape[1] == 64


@pytest.mark.parametrize("side", [32, 96])
def test_frames_resized_on_decode_are_the_processors_pixels(tmp_path, side):
    """Frames are scaled as SigLIP's processor scales an RGB image (bicubic), not from subsampled
    YUV in one pass: on fine colour texture that path is 13-22 levels off on average."""
    from transformers import SiglipImageProcessor

    from actalign import video as video_module
    from media import textured_video

    video = textured_video(tmp_path / "t.mp4", n=6, fps=6, size=(640, 360), seed=3)
    full = video_module.read_frames(video).frames
    processor = SiglipImageProcessor(size={"height": side, "width": side})
    pixels = np.asarray(processor(images=list(full), return_tensors="np")["pixel_values"])
    expected = (pixels.transpose(0, 2, 3, 1) * 0.5 + 0.5) * 255
    diff = np.abs(video_module.read_frames(video, resize=(side, side)).frames.astype(float) - expected)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 6, (diff.mean(), np.percentile(diff, 99))
