"""The alignment core against plain, obviously-correct references written here."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from unittest import mock

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actalign import align
from actalign.errors import ActAlignError
from actalign.precision import PRECISIONS, to_stored, widen

# ----------------------------------------------------------------------------- references


def reference_dtw(a: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """Eq. 11 as a double loop over (k, t), then backtracking; ties: diagonal, left, up."""
    k_n, t_n = a.shape
    d = [[-math.inf] * t_n for _ in range(k_n)]
    for k in range(k_n):
        for t in range(t_n):
            if k == 0 and t == 0:
                d[k][t] = float(a[k, t])
                continue
            diag = d[k - 1][t - 1] if k and t else -math.inf
            left = d[k][t - 1] if t else -math.inf
            up = d[k - 1][t] if k else -math.inf
            d[k][t] = max(diag, left, up) + float(a[k, t])
    k, t = k_n - 1, t_n - 1
    path = [(k, t)]
    while (k, t) != (0, 0):
        options = []
        if k and t:
            options.append(((k - 1, t - 1), d[k - 1][t - 1]))
        if t:
            options.append(((k, t - 1), d[k][t - 1]))
        if k:
            options.append(((k - 1, t), d[k - 1][t]))
        (k, t), _ = max(options, key=lambda o: o[1])  # first maximum wins
        path.append((k, t))
    return d[k_n - 1][t_n - 1], path[::-1]


def reference_smooth(x: np.ndarray, w: int) -> np.ndarray:
    if w <= 1:
        return x
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(len(x)):
        for tau in range(t - (w - 1) // 2, t + w // 2 + 1):
            if 0 <= tau < len(x):
                out[t] += x[tau]
    return out / w


# ----------------------------------------------------------------------------- strategies

BACKENDS = ["c", "numpy"] if align._kernel is not None else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("ACTALIGN_DTW", request.param)
    assert align.backend() == request.param
    return request.param


def matrices(max_k: int = 60, max_t: int = 60, kind: str = "float"):
    """Random affinity matrices in [0, 1].

    "float": any double; "dyadic": multiples of 1/1024 and "coarse": of 1/8, whose sums are exact
    in float64 so that ties are real ties for every implementation ("coarse" is full of them).
    """
    shape = st.tuples(st.integers(1, max_k), st.integers(1, max_t))
    elements = {
        "float": st.floats(0, 1, allow_nan=False, width=64),
        "dyadic": st.integers(0, 1024).map(lambda v: v / 1024),
        "coarse": st.integers(0, 8).map(lambda v: v / 8),
    }[kind]
    return shape.flatmap(lambda s: hnp.arrays(np.float64, s, elements=elements))


# ----------------------------------------------------------------------------- dtw


@pytest.mark.parametrize("kind", ["float", "dyadic", "coarse"])
def test_dtw_matches_reference(backend, kind):
    """Same path, total and score as the plain loop.

    The C kernel does the loop's own float operations, so it matches on any input. The numpy
    scan sums in another order: on exactly representable inputs it matches too; on arbitrary
    doubles two paths within a few ulps of each other may swap, so there it must find a path
    whose sum is the optimum.
    """
    exact = backend == "c" or kind != "float"

    @settings(max_examples=150, deadline=None)
    @given(matrices(kind=kind))
    def check(a):
        total, path = reference_dtw(a)
        got = align.dtw(a)
        assert abs(got.total - total) < 1e-9
        if backend == "c":  # same float operations in the same order: bit-identical
            assert got.total == total
        if exact:
            assert got.path.tolist() == [list(p) for p in path]
            assert abs(got.score - total / len(path)) < 1e-9
        else:
            assert abs(a[got.path[:, 0], got.path[:, 1]].sum() - total) < 1e-9

    check()


def test_dtw_scores_matches_dtw_and_reference(backend):
    @settings(max_examples=60, deadline=None)
    @given(st.lists(matrices(12, 40, "dyadic") | matrices(12, 40, "coarse"), min_size=1, max_size=8))
    def check(mats):
        scores = align.dtw_scores(mats)
        assert scores.shape == (len(mats),)
        for a, s in zip(mats, scores, strict=False):
            total, path = reference_dtw(a)
            assert abs(s - total / len(path)) < 1e-9
            assert abs(s - align.dtw(a).score) < 1e-9

    check()


def test_dtw_scores_same_t_different_k(backend):
    rng = np.random.default_rng(0)
    mats = [rng.random((k, 50)) for k in (3, 7, 1, 5)] + [rng.random((4, 9))]
    expected = [reference_dtw(a)[0] / len(reference_dtw(a)[1]) for a in mats]
    np.testing.assert_allclose(align.dtw_scores(mats), expected, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(matrices())
def test_path_and_segments_are_valid(a):
    k_n, t_n = a.shape
    r = align.dtw(a)
    assert tuple(r.path[0]) == (0, 0) and tuple(r.path[-1]) == (k_n - 1, t_n - 1)
    moves = np.diff(r.path, axis=0)
    assert {tuple(m) for m in moves} <= {(0, 1), (1, 0), (1, 1)}
    assert len(r.path) >= max(k_n, t_n) and len(r.path) <= k_n + t_n - 1
    seg = r.segments
    assert seg.shape == (k_n, 2)
    assert (seg[:, 0] <= seg[:, 1]).all()  # every step gets at least one frame
    assert seg[0, 0] == 0 and seg[-1, 1] == t_n - 1
    gaps = seg[1:, 0] - seg[:-1, 1]
    assert ((gaps == 0) | (gaps == 1)).all()  # ordered, and every frame is covered
    assert 0.0 <= r.score <= 1.0
    assert r.score == pytest.approx(r.total / len(r.path))
    assert r.total == pytest.approx(a[r.path[:, 0], r.path[:, 1]].sum())


def test_golden_small_case():
    a = np.array([[0.9, 0.8, 0.1, 0.1], [0.1, 0.2, 0.9, 0.7]])
    r = align.dtw(a)
    # max-sum DTW takes the detour through (1, 1) (+0.2) instead of the diagonal (0, 1) -> (1, 2)
    assert r.path.tolist() == [[0, 0], [0, 1], [1, 1], [1, 2], [1, 3]]
    assert r.total == pytest.approx(3.5)
    assert r.score == pytest.approx(3.5 / 5)
    assert r.segments.tolist() == [[0, 1], [1, 3]]


def test_ties_prefer_the_diagonal():
    r = align.dtw(np.zeros((3, 3)))
    assert r.path.tolist() == [[0, 0], [1, 1], [2, 2]]


def test_more_steps_than_frames(backend):
    a = np.random.default_rng(1).random((7, 3))
    r = align.dtw(a)
    assert len(r.path) >= 7 and r.segments[:, 0].max() <= 2
    assert align.dtw_scores([a])[0] == pytest.approx(r.score)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((0, 5)), "empty"),
        (np.zeros((3, 0)), "empty"),
        (np.array([[0.1, np.nan]]), "NaN or inf"),
        (np.array([[0.1, np.inf]]), "NaN or inf"),
        (np.zeros(4), "2-D"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_dtw_rejects_bad_input(bad, match):
    with pytest.raises(ActAlignError, match=match):
        align.dtw(bad)
    with pytest.raises(ActAlignError, match=match):
        align.dtw_scores([np.ones((2, 2)), bad])


def test_dtw_scores_empty_list():
    assert align.dtw_scores([]).shape == (0,)


# ----------------------------------------------------------------------------- smooth


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=st.floats(-1, 1, width=64)
    ),
    st.integers(0, 50),
)
def test_smooth_matches_direct_average(x, w):
    got = align.smooth(x, w)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, reference_smooth(x, w), atol=1e-12)


def test_smooth_keeps_float32_and_small_windows_are_identity():
    x = np.random.default_rng(0).random((10, 4)).astype(np.float32)
    assert align.smooth(x, 5).dtype == np.float32
    np.testing.assert_array_equal(align.smooth(x, 1), x)
    np.testing.assert_array_equal(align.smooth(x, 0), x)


@pytest.mark.parametrize("w", [2, 3, 30, 31])
def test_smooth_equals_authors_conv1d_rows(w):
    """Same rows as the authors' conv1d (which drops the last row for even w), plus that row."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((60, 8)).astype(np.float32)
    v = torch.from_numpy(x).t()[None]
    weight = torch.ones(8, 1, w) / w
    theirs = torch.nn.functional.conv1d(v, weight, padding=(w - 1) // 2, groups=8)[0].t().numpy()
    ours = align.smooth(x, w)
    assert ours.shape[0] == 60 and theirs.shape[0] == 60 - (w % 2 == 0)
    np.testing.assert_allclose(ours[: len(theirs)], theirs, atol=1e-5)


def test_smooth_rejects_bad_window():
    with pytest.raises(ActAlignError, match="window"):
        align.smooth(np.ones((3, 2)), -1)
    with pytest.raises(ActAlignError, match="window"):
        align.smooth(np.ones((3, 2)), 2.5)


def test_window_frames():
    assert align.window_frames(1.0, 29.97) == 30
    assert align.window_frames(1.0, 2) == 2
    assert align.window_frames(0.0, 30) == 1
    with pytest.raises(ActAlignError):
        align.window_frames(1.0, 0)


# ----------------------------------------------------------------------------- affinity


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 8),
    st.integers(1, 5),
    st.floats(0.1, 200),
    st.floats(-20, 20),
    st.integers(0, 2**31),
)
def test_affinity_matches_direct_formula(k, t, d, scale, bias, seed):
    rng = np.random.default_rng(seed)
    frames, steps = rng.normal(size=(t, d)), rng.normal(size=(k, d))
    got = align.affinity(frames, steps, scale, bias)
    assert got.shape == (k, t)
    for i in range(k):
        for j in range(t):
            cos = steps[i] @ frames[j] / (np.linalg.norm(steps[i]) * np.linalg.norm(frames[j]))
            assert got[i, j] == pytest.approx(1 / (1 + math.exp(-(scale * cos + bias))), abs=1e-12)
    linear = align.affinity(frames, steps, scale, None)
    np.testing.assert_allclose(linear, (1 + align.cosine(frames, steps)) / 2)
    assert (linear >= 0).all() and (linear <= 1).all()


def feed_in_blocks(stream, frames, blocks: list[int]) -> np.ndarray:
    """A StreamingAffinity's columns (K, T) for frames pushed in blocks of the given sizes (in
    turn), then finish()."""
    parts, at = [], 0
    while at < len(frames):
        size = blocks[len(parts) % len(blocks)]
        parts.append(stream.push(frames[at : at + size]))
        at += size
    parts.append(stream.finish())
    assert all(p.shape[0] == stream.k for p in parts)
    return np.concatenate(parts, axis=1)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 30),
    st.integers(1, 6),
    st.integers(0, 7),
    st.lists(st.integers(1, 9), min_size=1, max_size=6),
    st.sampled_from([(112.0, -16.5), (10.0, None), (1.0, 0.0)]),
    st.integers(0, 2**31),
)
def test_streaming_affinity_equals_smooth_then_affinity(k, t, d, w, blocks, calibration, seed):
    """Eq. 7-9 by the plain route (average the frames, normalise, cosine, calibrate), against the
    stream fed in blocks of any size: the same (K, T) to rounding, in float64 and float32."""
    rng = np.random.default_rng(seed)
    frames, steps = rng.normal(size=(t, d)), rng.normal(size=(k, d))
    scale, bias = calibration
    smoothed = reference_smooth(frames, w)
    want = np.empty((k, t))
    for i in range(k):
        for j in range(t):
            cos = steps[i] @ smoothed[j] / (np.linalg.norm(steps[i]) * np.linalg.norm(smoothed[j]))
            want[i, j] = (1 + cos) / 2 if bias is None else 1 / (1 + math.exp(-(scale * cos + bias)))
    # float32 only where the window's frames do not nearly cancel (there the cosine itself is
    # ill-conditioned, whatever the method)
    norms, largest = np.linalg.norm(smoothed, axis=1), np.linalg.norm(frames, axis=1).max()
    sound = norms > 0.1 * largest
    # float64 too, where they cancel to 1e-3 of a frame and worse (a norm from products of frames
    # of norm ~1 loses about eps / norm^2: 4e-9 seen at 4e-5, on either route)
    sound64 = norms > 1e-3 * largest
    for dtype, tol, route in ((np.float64, 1e-9, ""), (np.float64, 1e-9, "numpy"), (np.float32, 1e-3, "")):
        with mock.patch.dict(os.environ, {"ACTALIGN_AFFINITY": route}):  # the C kernel's Eq. 7-9, or numpy's
            stream = align.StreamingAffinity(steps, w, scale, bias, dtype)
        assert stream.fused == (route == "" and align.products_backend() != "numpy")
        got = feed_in_blocks(stream, frames, blocks)
        assert got.shape == want.shape
        rows = sound64 if dtype is np.float64 else sound
        np.testing.assert_allclose(got[:, rows], want[:, rows], atol=tol)
    whole = align.smoothed_affinity(frames, steps, w, scale, bias)
    np.testing.assert_allclose(whole[:, sound64], want[:, sound64], atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 40),
    st.sampled_from([1, 3, 16, 17, 32, 48]),
    st.integers(0, 6),
    st.lists(st.integers(1, 13), min_size=1, max_size=5),
    st.sampled_from(PRECISIONS),
    st.sampled_from(["kernel", "numpy"]),
    st.integers(0, 2**31),
)
def test_streaming_affinity_of_stored_frames(k, t, d, w, blocks, precision, route, seed):
    """Frames as an index stores them (bfloat16 as uint16 bits, float16, float32), through the C
    kernel (which reads them in place) or numpy (which widens them): the plain route's Eq. 7-9 on
    the same frames widened to float64, to float32 rounding, in any block partition."""
    rng = np.random.default_rng(seed)
    frames, steps = rng.normal(size=(t, d)), rng.normal(size=(k, d))
    frames[:, 0] += 3.0  # windows whose frames nearly cancel are ill-conditioned in any float32
    stored = to_stored(frames, precision)
    exact = widen(stored, precision).astype(np.float64)
    smoothed = reference_smooth(exact, w)
    unit = steps / np.linalg.norm(steps, axis=1, keepdims=True)
    cos = unit @ (smoothed / np.linalg.norm(smoothed, axis=1, keepdims=True)).T
    want = 1 / (1 + np.exp(-(10.0 * cos - 2.0)))
    with mock.patch.dict(os.environ, {"ACTALIGN_AFFINITY": "" if route == "kernel" else "numpy"}):
        stream = align.StreamingAffinity(steps, w, 10.0, -2.0, np.float32, stored=precision)
    assert stream.kernel == (route == "kernel" and align.products_backend() != "numpy")
    np.testing.assert_allclose(feed_in_blocks(stream, stored, blocks), want, atol=2e-5)


@pytest.mark.skipif(align.products_backend() == "numpy", reason="the C kernel is not built")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", [16, 48, 1152, 20, 64])
def test_products_kernel_loops_against_float64(precision, d):
    """Both loops of the kernel (AVX-512 where the CPU has it, and the plain one) against float64
    products of the widened frames, for every remainder of the 6-frame x 4-step tiles."""
    from actalign import _affinity

    rng = np.random.default_rng(d)
    for m, n, k, lags in ((0, 1, 1, 0), (2, 13, 7, 2), (5, 6, 8, 4), (1, 29, 81, 1)):
        x = to_stored(rng.normal(size=(m + n, d)), precision)
        u = rng.normal(size=(k, d)).astype(np.float32)
        wide = widen(x, precision).astype(np.float64)
        want = wide[m:] @ u.astype(np.float64).T
        want_lags = np.array(
            [
                [wide[g - lag] @ wide[g] if g >= lag else np.nan for lag in range(lags + 1)]
                for g in range(m, m + n)
            ]
        )
        for generic in (False, True):
            rows = np.full((m + n, k + lags + 1), np.nan)  # frame j's row is j
            kind = PRECISIONS.index(precision)
            _affinity.products(x[:m], x[m:], kind, d, u, k, lags, rows, m, generic)
            scale = np.abs(wide).max() ** 2 * d
            np.testing.assert_allclose(rows[m:, :k], want, atol=1e-6 * scale)
            assert np.isnan(rows[:m, :k]).all()  # the tail's products are not the block's to write
            for lag in range(lags + 1):  # f_j . f_(j + lag) in frame j's row, for j + lag in the block
                col = rows[:, k + lag]
                for j in range(m + n):
                    if j + lag >= m and j + lag < m + n:
                        assert col[j] == pytest.approx(want_lags[j + lag - m, lag], abs=1e-6 * scale)
                    else:
                        assert np.isnan(col[j])


def test_streaming_affinity_refuses_stored_frames_of_another_form():
    stream = align.StreamingAffinity(np.eye(4), 1, dtype=np.float32, stored="bfloat16")
    with pytest.raises(ActAlignError, match="uint16 array with 4 columns"):
        stream.push(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ActAlignError, match="NaN"):
        align.StreamingAffinity(np.eye(4), 1, dtype=np.float32, stored="float16").push(
            np.full((2, 4), np.nan, dtype=np.float16)
        )


def test_streaming_affinity_lags_half_a_window_and_refuses_zero_rows():
    steps = np.eye(3)
    stream = align.StreamingAffinity(steps, 5, 1.0, 0.0)
    assert stream.push(np.ones((4, 3))).shape == (3, 2)  # rows 0 and 1 have their whole window
    assert stream.finish().shape == (3, 2)
    with pytest.raises(ActAlignError, match="width"):
        align.StreamingAffinity(steps, 1).push(np.ones((2, 4)))
    with pytest.raises(ActAlignError, match="all-zero"):
        align.smoothed_affinity(np.array([[1.0, 0, 0], [-1.0, 0, 0]]), steps, 2)
    with pytest.raises(ActAlignError, match="whole number"):
        align.StreamingAffinity(steps, 1.5)


def test_affinity_rejects_mismatch_and_zero_rows():
    with pytest.raises(ActAlignError, match="width"):
        align.affinity(np.ones((3, 4)), np.ones((2, 5)))
    with pytest.raises(ActAlignError, match="all-zero"):
        align.affinity(np.zeros((3, 4)), np.ones((2, 4)))
    with pytest.raises(ActAlignError, match="NaN"):
        align.affinity(np.full((3, 4), np.nan), np.ones((2, 4)))


def test_sigmoid_is_stable_at_extremes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        out = align.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


@given(st.lists(st.floats(-745, 745), min_size=1, max_size=50))
def test_sigmoid_matches_exact_logistic(xs):
    """Against the logistic function in exact rational arithmetic (via math.exp's double)."""
    got = align.sigmoid(np.array(xs))
    for x, y in zip(xs, got):
        want = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        assert y == pytest.approx(want, rel=1e-14, abs=1e-300)


def test_importing_align_does_not_import_torch():
    code = "import sys, actalign.align; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
