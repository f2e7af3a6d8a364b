"""Subsequence (local) alignment against a plain reference, librosa as an independent oracle, and
streaming in chunks equal to one pass."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actalign import align
from actalign.errors import ActAlignError

BACKENDS = ["c", "numpy"] if align._kernel is not None else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("ACTALIGN_DTW", request.param)
    assert align.backend() == request.param
    return request.param


def reference_subsequence(a: np.ndarray, tau: np.ndarray):
    """Plain double loop of the subsequence recurrence on excess A - tau, then backtracking.

    Row 0: start afresh or continue from the left (ties continue); other rows: diagonal, left,
    up (ties in that order). End: the first frame with the best total of the last row.
    Returns (gain, path).
    """
    k_n, t_n = a.shape
    d = [[-math.inf] * t_n for _ in range(k_n)]
    for t in range(t_n):
        e = float(a[0, t]) - float(tau[0])
        if t and d[0][t - 1] >= 0.0:
            d[0][t] = d[0][t - 1] + e
        else:
            d[0][t] = 0.0 + e
    for k in range(1, k_n):
        for t in range(t_n):
            e = float(a[k, t]) - float(tau[k])
            diag = d[k - 1][t - 1] if t else -math.inf
            left = d[k][t - 1] if t else -math.inf
            up = d[k - 1][t]
            d[k][t] = max(diag, left, up) + e
    end = max(range(t_n), key=lambda t: (d[k_n - 1][t], -t))
    k, t = k_n - 1, end
    path = [(k, t)]
    while True:
        if k == 0:
            if t and d[0][t - 1] >= 0.0:
                t -= 1
                path.append((k, t))
                continue
            break
        options = []
        if t:
            options.append(((k - 1, t - 1), d[k - 1][t - 1]))
            options.append(((k, t - 1), d[k][t - 1]))
        options.append(((k - 1, t), d[k - 1][t]))
        (k, t), _ = max(options, key=lambda o: o[1])
        path.append((k, t))
    return d[k_n - 1][end], path[::-1]


def matrices(max_k=12, max_t=60, kind="float"):
    shape = st.tuples(st.integers(1, max_k), st.integers(1, max_t))
    elements = {
        "float": st.floats(0, 1, allow_nan=False, width=64),
        "dyadic": st.integers(0, 1024).map(lambda v: v / 1024),
        "coarse": st.integers(0, 8).map(lambda v: v / 8),
    }[kind]
    return shape.flatmap(lambda s: hnp.arrays(np.float64, s, elements=elements))


@pytest.mark.parametrize("kind", ["float", "dyadic", "coarse"])
def test_subsequence_matches_the_reference(backend, kind):
    """C does the loop's own float operations: bit-identical. The numpy scan sums in another
    order: identical where every sum is exact (dyadic affinities and thresholds), the optimum to
    rounding elsewhere (the thresholds of `background` are means, rarely exact)."""

    @settings(max_examples=150, deadline=None)
    @given(matrices(kind=kind), st.sampled_from([None, 0.0, 0.5, 1.0]))
    def check(a, z):
        if z is None:  # dyadic thresholds given explicitly
            tau = np.round(a.mean(axis=1) * 64) / 64
            got = align.dtw(a, mode="subsequence", tau=tau)
        else:
            tau = align.background(a, z)
            got = align.dtw(a, mode="subsequence", z=z)
        exact = backend == "c" or (kind != "float" and z is None)
        gain, path = reference_subsequence(a, tau)
        assert abs(got.gain - gain) < 1e-9
        if backend == "c":
            assert got.gain == gain
        if exact:
            assert got.path.tolist() == [list(p) for p in path]
        p = got.path
        excess = (a - tau[:, None])[p[:, 0], p[:, 1]].sum()
        assert abs(excess - gain) < 1e-9  # the path is an optimal one
        assert got.span == (int(p[0, 1]), int(p[-1, 1]))
        assert p[0, 0] == 0 and p[-1, 0] == a.shape[0] - 1
        steps = np.diff(p, axis=0)
        assert ((steps == [1, 1]) | (steps == [0, 1]) | (steps == [1, 0])).all(axis=1).all()
        assert got.total == pytest.approx(a[p[:, 0], p[:, 1]].sum(), abs=1e-9)
        assert got.score == pytest.approx(got.total / len(p), abs=1e-12)  # prior 0: Eq. 13 on the span

    check()


def test_scores_batch_and_prior(backend):
    @settings(max_examples=60, deadline=None)
    @given(st.lists(matrices(8, 40, "dyadic"), min_size=1, max_size=6), st.sampled_from([0.0, 3.0, 10.0]))
    def check(mats, prior):
        got = align.dtw_scores(mats, mode="subsequence", prior=prior)
        for score, a in zip(got, mats):
            one = align.dtw(a, mode="subsequence", prior=prior)
            assert score == pytest.approx(one.score, abs=1e-12)
            n = len(one.path)
            assert one.score == pytest.approx((one.total + prior * a.mean()) / (n + prior), abs=1e-12)

    check()


def test_librosa_is_an_independent_oracle():
    """librosa's subsequence DTW minimises the summed cost with free ends on the long axis; with
    cost tau - A and its default steps ((1,1), (0,1), (1,0)) that is our objective (K <= T)."""
    librosa = pytest.importorskip("librosa", reason="librosa (a test extra) is not installed")
    rng = np.random.default_rng(0)
    for _ in range(40):
        k = int(rng.integers(1, 9))
        t = int(rng.integers(k, 80))
        a = rng.random((k, t)) ** rng.uniform(0.5, 4)
        tau = align.background(a, 0.5)
        cost, _ = librosa.sequence.dtw(C=tau[:, None] - a, subseq=True)
        stream = align.SubsequenceStream(k)
        matching = stream.feed(a, tau)[0]  # best gain of a path ending at each frame
        np.testing.assert_allclose(matching, -cost[-1], atol=1e-9)
        assert align.dtw(a, mode="subsequence").gain == pytest.approx(-cost[-1].min(), abs=1e-9)


def test_chunks_give_the_same_results_as_one_pass(backend):
    @settings(max_examples=80, deadline=None)
    @given(matrices(8, 80, "float"), st.lists(st.integers(1, 20), min_size=1, max_size=10))
    def check(a, cuts):
        tau = align.background(a, 0.5)
        whole = align.SubsequenceStream(a.shape[0]).feed(a, tau)
        stream = align.SubsequenceStream(a.shape[0])
        parts, at = [], 0
        for c in [*cuts, a.shape[1]]:
            if at >= a.shape[1]:
                break
            parts.append(stream.feed(a[:, at : at + c], tau))
            at += c
        chunked = np.concatenate(parts, axis=1)
        if backend == "c":
            np.testing.assert_array_equal(chunked, whole)
        else:  # the same optimum; among near-ties (rounding) another path may be taken
            np.testing.assert_allclose(chunked[0], whole[0], atol=1e-9)
        best = int(np.argmax(whole[0]))
        one = align.dtw(a, mode="subsequence")
        assert whole[0, best] == pytest.approx(one.gain, abs=1e-9)
        assert (int(whole[3, best]), best) == one.span or abs(whole[0, best] - one.gain) < 1e-9

    check()


def test_global_mode_is_untouched_by_the_options():
    a = np.random.default_rng(1).random((4, 30))
    assert align.dtw(a).span is None and align.dtw(a, mode="global").score == align.dtw(a).score
    with pytest.raises(ActAlignError, match="Unknown option"):
        align.dtw(a, prior=3)
    with pytest.raises(ActAlignError, match="Unknown alignment mode"):
        align.dtw(a, mode="local")
    with pytest.raises(ActAlignError, match="prior"):
        align.dtw(a, mode="subsequence", prior=-1)
    with pytest.raises(ActAlignError, match="NaN"):
        align.dtw_scores([np.full((2, 3), np.nan)], mode="subsequence")


# --------------------------------------------------------------------------- planted spans


def planted(t=200, span=(80, 120), k=4, high=0.9, low=0.05, noise=0.02, seed=0):
    """Step k matches the k-th quarter of `span` (high), everything else is background (low)."""
    rng = np.random.default_rng(seed)
    a = low + noise * rng.random((k, t))
    edges = np.linspace(span[0], span[1], k + 1).round().astype(int)
    for i in range(k):
        a[i, edges[i] : edges[i + 1]] = high - noise * rng.random(edges[i + 1] - edges[i])
    return a, edges


def test_the_span_neither_collapses_nor_drifts():
    a, edges = planted()
    got = align.dtw(a, mode="subsequence")
    assert got.span == (80, 119)  # exactly the planted frames
    for i, (first, last) in enumerate(got.segments):
        assert (first, last) == (edges[i], edges[i + 1] - 1)
    # a path-mean objective would collapse onto the single best frame of each step
    best_mean = max(a[i].max() for i in range(a.shape[0]))
    assert got.score < best_mean and len(got.path) == 40
    # global alignment drifts: its first step starts at frame 0
    assert align.dtw(a).segments[0][0] == 0


def test_a_few_high_frames_do_not_win_the_ranking():
    """Candidate A matches 40 frames well; candidate B has one spurious excellent frame per step.
    The plain span mean would rank B first; the prior (1 s = 10 frames here) ranks A first."""
    a, _ = planted(high=0.8)
    b = 0.05 + 0.02 * np.random.default_rng(5).random(a.shape)
    for i in range(4):
        b[i, 150 + i] = 1.0
    plain = align.dtw_scores([a, b], mode="subsequence", prior=0)
    assert plain[1] > plain[0]
    shrunk = align.dtw_scores([a, b], mode="subsequence", prior=10)
    assert shrunk[0] > shrunk[1]


def test_trimmed_clip_local_and_global_agree():
    a, _ = planted(t=40, span=(0, 40))
    local, glob = align.dtw(a, mode="subsequence"), align.dtw(a)
    assert local.span == (0, 39)
    assert np.abs(local.segments - glob.segments).max() <= 1  # within one frame
    # the max-sum global path also takes a few low cells at step boundaries (each adds a little
    # to the sum); the excess-maximising path does not, so its mean is slightly higher
    assert glob.score < local.score == pytest.approx(glob.score, rel=0.1)
