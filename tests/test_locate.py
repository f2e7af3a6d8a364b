"""Local alignment through real video files with a deterministic encoder: an action inside a
longer clip, the trimmed clip, two occurrences in a long video, bounded memory, exports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actalign import ActAlign, align
from actalign.cli import main
from actalign.locate import DEFAULT_MIN_GAIN_RATIO, DEFAULT_NMS, Locator, _nms
from colour_encoder import PALETTE, ColourEncoder
from media import make_video

FPS = 5
ORDER = ["red", "green", "blue", "yellow"]
PAD = ["magenta", "cyan"]  # footage of no candidate: what the padding stands for


def scripts() -> dict:
    perms = [
        ORDER,
        ORDER[::-1],
        [ORDER[1], ORDER[0], ORDER[3], ORDER[2]],
        [ORDER[2], ORDER[3], ORDER[0], ORDER[1]],
    ]
    return {"t": {f"move {i}": [f"the {c} phase" for c in p] for i, p in enumerate(perms)}}


CANDIDATES = ["move 1", "move 0", "move 2", "move 3"]  # "move 0" is the planted order


def padded_video(path, before=20.0, after=20.0, seed=0, occurrences=((20.0,),)):
    """`before` s of padding, the action (2 s per step), `after` s of padding, at FPS."""
    rng = np.random.default_rng(seed)
    action = [PALETTE[c] for c in ORDER for _ in range(2 * FPS)]
    pad = lambda n: [PALETTE[PAD[rng.integers(2)]] for _ in range(n)]  # noqa: E731
    colours = pad(round(before * FPS)) + action + pad(round(after * FPS))
    return make_video(path, n=len(colours), fps=FPS, colors=colours, size=(16, 16))


def model(alignment="subsequence", smooth=0.6, **kw) -> ActAlign:
    return ActAlign(ColourEncoder(), scripts(), smooth=smooth, cache=False, alignment=alignment, **kw)


FRAME = 1 / FPS


def test_the_action_is_found_inside_a_longer_clip(tmp_path):
    padded = padded_video(tmp_path / "padded.mp4")
    trimmed = padded_video(tmp_path / "trimmed.mp4", before=0, after=0)
    pred = model().classify(padded, CANDIDATES, "t")
    assert pred.top.action == "move 0"
    start, end = pred.top.span
    assert abs(start - 20.0) <= FRAME + 1e-6 and abs(end - 28.0) <= FRAME + 1e-6
    for k, seg in enumerate(pred.top.segments):  # in order, each within one frame of the plant
        assert abs(seg.start - (20 + 2 * k)) <= FRAME + 1e-6 and abs(seg.end - (22 + 2 * k)) <= FRAME + 1e-6
    local_trimmed = model().classify(trimmed, CANDIDATES, "t")
    global_trimmed = model("global").classify(trimmed, CANDIDATES, "t")
    assert pred.top.score == pytest.approx(local_trimmed.top.score, abs=0.05)
    assert pred.top.score == pytest.approx(global_trimmed.top.score, abs=0.1)
    # the paper's global alignment on the padded clip: the first step swallows the padding
    glob = model("global").classify(padded, CANDIDATES, "t")
    assert glob.rank_of("move 0") == 1 and glob.top.segments[0].start == 0.0
    assert glob.top.score < pred.top.score - 0.3


def test_default_smoothing_widens_the_span_by_at_most_half_its_window(tmp_path):
    padded = padded_video(tmp_path / "padded.mp4")
    pred = model(smooth=1.0).classify(padded, CANDIDATES, "t")
    half = (round(1.0 * FPS) - 1) // 2  # frames
    start, end = pred.top.span
    assert 20.0 - (half + 1) * FRAME - 1e-6 <= start <= 20.0 + FRAME
    assert 28.0 - FRAME <= end <= 28.0 + (half + 1) * FRAME + 1e-6


def test_trimmed_clip_local_and_global_agree(tmp_path):
    trimmed = padded_video(tmp_path / "trimmed.mp4", before=0, after=0)
    local = model().classify(trimmed, CANDIDATES, "t")
    glob = model("global").classify(trimmed, CANDIDATES, "t")
    assert [c.action for c in local.candidates][:1] == [c.action for c in glob.candidates][:1] == ["move 0"]
    assert local.top.span == pytest.approx((0.0, 8.0))
    assert local.top.score == pytest.approx(glob.top.score, rel=0.1)


def two_occurrences(path) -> Path:
    rng = np.random.default_rng(3)
    pad = lambda seconds: [PALETTE[PAD[rng.integers(2)]] for _ in range(round(seconds * FPS))]  # noqa: E731
    action = [PALETTE[c] for c in ORDER for _ in range(2 * FPS)]
    colours = pad(10) + action + pad(22) + action + pad(12)  # actions at 10-18 s and 40-48 s
    return make_video(path, n=len(colours), fps=FPS, colors=colours, size=(16, 16))


def test_locate_finds_both_occurrences(tmp_path):
    video = two_occurrences(tmp_path / "long.mp4")
    m = ActAlign(ColourEncoder(), scripts(), fps=FPS, smooth=0.6, cache=False)
    found = m.locate(video, CANDIDATES, "t", window_seconds=7.0)  # windows cut through both actions
    best = [d for d in found if d.action == "move 0"]
    assert len(best) == 2
    spans = sorted((d.start, d.end) for d in best)
    for (s, e), (ps, pe) in zip(spans, [(10, 18), (40, 48)]):
        assert abs(s - ps) <= FRAME + 1e-6 and abs(e - pe) <= FRAME + 1e-6
    for d in best:
        assert [seg.step for seg in d.segments] == [f"the {c} phase" for c in ORDER]
        assert all(a.start <= b.start for a, b in zip(d.segments, d.segments[1:]))
    others = [d.score for d in found if d.action != "move 0"]
    assert max(others) < min(d.score for d in best)
    # the same answer from one window as from many
    whole = m.locate(video, CANDIDATES, "t", window_seconds=1000.0)
    assert sorted((d.start, d.end) for d in whole if d.action == "move 0") == spans


def test_locate_cli_writes_cues(tmp_path, siglip_dir, capsys):
    video = two_occurrences(tmp_path / "long.mp4")
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    base = [
        "locate",
        str(video),
        "--domain",
        "t",
        "--candidates",
        "a",
        "b",
        "--scripts",
        str(s),
        "--model",
        str(siglip_dir),
        "--no-cache",
        "--top",
        "2",
    ]
    assert main([*base, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["detections"] and all(d["span"]["start"] < d["span"]["end"] for d in data["detections"])
    assert (
        data["domain"] == "t" and data["settings"]["window_seconds"] == 300 and data["settings"]["top"] == 2
    )
    assert sum(d["action"] == "a" for d in data["detections"]) <= 2
    assert main([*base, "--format", "vtt", "-o", str(tmp_path / "cues.vtt")]) == 0
    import webvtt

    cues = webvtt.read(str(tmp_path / "cues.vtt"))
    assert len(cues) >= len(data["detections"]) and cues[0].text
    assert main([*base, "--format", "srt"]) == 0
    out = capsys.readouterr().out
    import srt

    assert len(list(srt.parse(out))) == len(cues)


def test_classify_cli_subsequence_json_has_spans(tmp_path, siglip_dir, capsys):
    video = padded_video(tmp_path / "p.mp4", before=2, after=2)
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    args = [
        "classify",
        str(video),
        "--domain",
        "t",
        "--candidates",
        "a",
        "b",
        "--scripts",
        str(s),
        "--model",
        str(siglip_dir),
        "--alignment",
        "subsequence",
        "--format",
        "json",
        "--no-cache",
    ]
    assert main(args) == 0
    (v,) = json.loads(capsys.readouterr().out)["videos"]
    assert v["alignment"] == "subsequence"
    for p in v["predictions"]:
        assert 0 <= p["span"]["start"] < p["span"]["end"] <= 12.0
        assert (
            p["span"]["start"] <= p["segments"][0]["start"] and p["segments"][-1]["end"] <= p["span"]["end"]
        )


BIG_ENCODER = '''
import numpy as np, sys
sys.path.insert(0, {tests!r})
from colour_encoder import ColourEncoder

class Big(ColourEncoder):
    """The colour encoder with 4096-dim embeddings: a whole video's would weigh a lot."""
    dim = 4096
    identity = "test:big"
    batch_size = 64

    def _onehot(self, index):
        small = np.full(7, 0.05, np.float32)
        small[index] = 1.0
        v = np.zeros(self.dim, np.float32)
        v[:7] = small / np.linalg.norm(small)
        return v
'''


def test_locate_streams_in_bounded_memory(tmp_path):
    """8 minutes at 30 fps (14,400 frames): their 4096-dim embeddings alone would be 236 MB. With
    60-second windows locate must stay far below that above the interpreter's baseline."""
    rng = np.random.default_rng(0)
    colours = [PALETTE[PAD[rng.integers(2)]] for _ in range(30)] * 480
    video = make_video(tmp_path / "long.mp4", n=len(colours), fps=30, colors=colours, size=(16, 16))
    (tmp_path / "big.py").write_text(BIG_ENCODER.format(tests=str(Path(__file__).parent)))
    code = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from big import Big
        from actalign import ActAlign
        scripts = {{"t": {{"a": ["the red phase", "the green phase"],
                          "b": ["the magenta phase", "the cyan phase"]}}}}
        m = ActAlign(Big(), scripts, fps=30, cache=False)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        found = m.locate({str(video)!r}, ["a", "b"], "t", window_seconds=60)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(found), (peak - base) / 1024)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    found, grown_mb = proc.stdout.split()
    assert int(found) >= 1
    assert float(grown_mb) < 120, grown_mb  # one 60 s window of embeddings is 29 MB
    print(f"locate grew {grown_mb} MB")


# ----------------------------------------------------------------------------- the alignment part


def reference_nms(rows: list[tuple], threshold: float) -> list[int]:
    """Greedy temporal NMS, one row at a time: indices kept, in order of start."""
    kept: list[int] = []
    for i in sorted(range(len(rows)), key=lambda i: -rows[i][2]):  # stable: first of equal gains
        s, e = rows[i][0], rows[i][1] + 1
        if all(
            (inter := max(0, min(e, rows[j][1] + 1) - max(s, rows[j][0])))
            / ((e - s) + (rows[j][1] + 1 - rows[j][0]) - inter)
            <= threshold
            for j in kept
        ):
            kept.append(i)
    return sorted(kept, key=lambda i: rows[i][0])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 700), st.sampled_from([0.0, 0.3, 0.7]), st.integers(0, 2**31))
def test_nms_equals_one_row_at_a_time(n, threshold, seed):
    """Batched suppression (256 rows per batch) against the plain greedy loop, ties included."""
    rng = np.random.default_rng(seed)
    starts = rng.permutation(3 * n)[:n]  # one row per start, as the Locator gives them
    ends = starts + rng.integers(0, 40, n)
    gains = rng.integers(1, 6, n).astype(float)  # many equal gains
    rows = np.stack([starts, ends, gains, rng.random(n), rng.random(n), rng.random(n)], 1)
    rows = rows[np.argsort(rows[:, 0])]
    want = reference_nms([tuple(r) for r in rows], threshold)
    np.testing.assert_array_equal(_nms(rows, threshold), rows[want])


def reference_find(windows: list[np.ndarray], sizes: list[int], prior: float, nms: float) -> list[tuple]:
    """Locator's result by the plain route: per action, the thresholds from all columns so far,
    the stream's best path per end frame, per start the best end (dict), NMS, the gain ratio, the
    shrunk score; best first."""
    bounds = np.cumsum([0, *sizes])
    found = []
    for a in range(len(sizes)):
        stream, seen, best = align.SubsequenceStream(sizes[a]), [], {}
        offset = 0
        for w in windows:
            aff = w[bounds[a] : bounds[a + 1]]
            seen.append(aff)
            tau = aff.mean(axis=1) + align.SUBSEQUENCE_Z * np.concatenate(seen, axis=1).std(axis=1)
            gain, raw, length, start = stream.feed(aff, tau)
            for t in range(aff.shape[1]):
                if gain[t] > 0 and (start[t] not in best or gain[t] > best[start[t]][2]):
                    best[start[t]] = (start[t], offset + t, gain[t], raw[t], length[t], aff.mean())
            offset += aff.shape[1]
        rows = [best[s] for s in sorted(best)]
        found += [(a, rows[i]) for i in reference_nms(rows, nms)]
    top = max((r[2] for _, r in found), default=0.0)
    out = [
        (f"a{a}", int(s), int(e), (raw + prior * m) / (n + prior), g)
        for a, (s, e, g, raw, n, m) in found
        if g >= DEFAULT_MIN_GAIN_RATIO * top
    ]
    return sorted(out, key=lambda d: -d[3])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=4),
    st.lists(st.integers(1, 40), min_size=1, max_size=5),
    st.integers(0, 2**31),
)
def test_locator_equals_plain_route(sizes, window_lengths, seed):
    """All actions in one pass (thresholds for every step at once, one collection per window)
    against each action alone, step by step."""
    rng = np.random.default_rng(seed)
    windows = [rng.random((sum(sizes), c)) ** 3 for c in window_lengths]
    locator = Locator({f"a{i}": np.ones((k, 2)) for i, k in enumerate(sizes)}, prior=2.0)
    for w in windows:
        locator.feed(w)
    got = locator.finish()
    want = reference_find(windows, sizes, 2.0, DEFAULT_NMS)
    assert [(a, s, e) for a, s, e, _, _ in got] == [(a, s, e) for a, s, e, _, _ in want]
    np.testing.assert_allclose([d[3:] for d in got], [d[3:] for d in want], atol=1e-9)
