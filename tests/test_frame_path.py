"""One path from video to prediction: classify, batch (both engines) and locate share one frame
cache entry and one scoring unit; candidates follow one rule; the modules have no import circles."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import actalign.embed
from actalign import ActAlign, align
from actalign.candidates import candidates_from_text, check_candidates
from actalign.embed import VideoEmbedding, frame_key, read_entry, write_entry
from actalign.encoders import load_encoder
from actalign.encoders.cache import EmbeddingCache, make_key
from actalign.errors import ActAlignError
from actalign.runner import run
from actalign.runner.plan import load_manifest, plan_videos
from actalign.score import Calibration, Method, score
from actalign.scripts import ScriptSource
from actalign.video import Sampling, fingerprint
from media import make_video

SCRIPTS = {"t": {"a": ["red ball", "blue net", "player jumps"], "b": ["blue net", "red ball"]}}


def index_entries(cache_root: Path) -> list[Path]:
    """The cache's video entries (their indexes: frames of shape (0, 0))."""
    found = []
    for f in (cache_root / "frames").rglob("*.npz"):
        with np.load(f) as z:
            if z["frames"].shape == (0, 0):
                found.append(f)
    return found


@pytest.fixture
def video(tmp_path):
    levels = [(i * 37 % 255, i * 11 % 255, 255 - i * 5 % 255) for i in range(40)]
    return make_video(tmp_path / "clip.mp4", n=40, fps=10, colors=levels)


def test_classify_batch_and_locate_share_one_entry_and_scores(tmp_path, siglip_dir, video):
    cache = EmbeddingCache(tmp_path / "shared-cache")
    enc = load_encoder(str(siglip_dir))
    model = ActAlign(enc, SCRIPTS, fps=5, cache=cache)
    pred = model.classify(video, ["a", "b"], "t")
    assert len(index_entries(cache.root)) == 1
    source = ScriptSource()
    source.hand = [SCRIPTS]
    result = run(
        plan_videos([str(video)], "t", ["a", "b"]),
        enc,
        {"context-rich": source},
        str(tmp_path / "run"),
        [Method("ActAlign")],
        fps=5,
        cache=cache,
        workers=1,
        progress=False,
    )
    row = result.rows[0]
    assert row["methods"]["ActAlign"]["scores"] == [
        round(pred.candidates[pred.rank_of(a) - 1].score, 9) for a in "ab"
    ]
    assert [p["action"] for p in row["predictions"]] == [c.action for c in pred.candidates]
    assert len(index_entries(cache.root)) == 1  # batch read classify's entry, wrote none of its own

    model.locate(video, ["a", "b"], "t")
    assert len(index_entries(cache.root)) == 1  # locate at the same fps: the same entry


def test_an_entry_under_the_old_runner_key_is_never_read(tmp_path, siglip_dir, video):
    cache = EmbeddingCache(tmp_path / "c")
    enc = load_encoder(str(siglip_dir))
    sampling = Sampling(fps=5)
    old = make_key("frames/2", fingerprint(video), enc.identity, sampling.key(), enc.decode_size)
    garbage = np.ones((10, enc.dim), np.float32) / np.sqrt(enc.dim)
    cache.put_frames(old, garbage, np.arange(10) / 5.0, 2.0)
    new = frame_key(enc.identity, video, sampling, enc.decode_size)
    assert new != old
    source = ScriptSource()
    source.hand = [SCRIPTS]
    result = run(
        plan_videos([str(video)], "t", ["a", "b"]),
        enc,
        {"context-rich": source},
        str(tmp_path / "run"),
        [Method("ActAlign")],
        fps=5,
        cache=cache,
        workers=0,
        progress=False,
    )
    fresh = ActAlign(enc, SCRIPTS, fps=5, cache=False).classify(video, ["a", "b"], "t")
    assert result.rows[0]["frames"] == len(fresh.timestamps) != 10
    assert read_entry(cache, new, "v")[0] is not None


def test_a_second_locate_reads_the_cache_and_never_decodes(tmp_path, siglip_dir, video, monkeypatch):

    model = ActAlign(str(siglip_dir), SCRIPTS, fps=5, cache=EmbeddingCache(tmp_path / "c"))
    first = model.locate(video, ["a", "b"], "t")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(actalign.embed, "iter_frames", no_decoding)
    monkeypatch.setattr(actalign.locate, "iter_frames", no_decoding)
    again = model.locate(video, ["a", "b"], "t")
    assert [d.to_dict() for d in again] == [d.to_dict() for d in first]
    only_b = model.locate(video, ["b"], "t")  # other candidates, same video: no decoding either
    assert all(d.action == "b" for d in only_b)


def test_locate_without_a_cache_decodes_the_spans_again(tmp_path, siglip_dir, video):

    cached = ActAlign(str(siglip_dir), SCRIPTS, fps=5, cache=EmbeddingCache(tmp_path / "c")).locate(
        video, ["a", "b"], "t"
    )
    uncached = ActAlign(str(siglip_dir), SCRIPTS, fps=5, cache=False).locate(video, ["a", "b"], "t")
    assert [d.to_dict() for d in cached] == [d.to_dict() for d in uncached]


def test_decoder_warnings_come_back_with_cached_embeddings(tmp_path):
    cache = EmbeddingCache(tmp_path)
    frames = np.eye(4, dtype=np.float32)
    write_entry(cache, "k", frames, np.arange(4.0), 4.0, ["1 damaged packet skipped"])
    entry = read_entry(cache, "k", "v")[0]
    assert entry.warnings == ["1 damaged packet skipped"] and np.array_equal(entry.frames, frames)


def test_long_videos_are_stored_in_blocks_read_back_whole(tmp_path):
    from actalign.encoders.cache import FRAME_BLOCK

    cache = EmbeddingCache(tmp_path)
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((FRAME_BLOCK * 2 + 7, 3)).astype(np.float32)
    write_entry(cache, "k", frames, np.arange(len(frames)) / 2.0, len(frames) / 2.0)
    assert np.array_equal(read_entry(cache, "k", "v")[0].frames, frames)
    next(iter((tmp_path / "frames").rglob("*.npz")))  # stored
    victim = next(f for f in (tmp_path / "frames").rglob("*.npz") if f not in index_entries(tmp_path))
    victim.write_bytes(b"damaged")
    assert read_entry(cache, "k", "v")[0] is None  # a damaged block: the entry is recomputed, never half-read


# --------------------------------------------------------------------------- the one scoring unit


def plain_dtw(a: np.ndarray) -> tuple[float, int]:
    """Eq. 10-13 by the book: D_kt = A_kt + max of the three predecessors; (D[K-1,T-1], |W|)."""
    k, t = a.shape
    d = np.full((k, t), -np.inf)
    n = np.zeros((k, t), int)
    for i in range(k):
        for j in range(t):
            if i == j == 0:
                d[i, j], n[i, j] = a[0, 0], 1
                continue
            options = [(d[i - 1, j - 1], n[i - 1, j - 1])] if i and j else []
            options += [(d[i, j - 1], n[i, j - 1])] if j else []
            options += [(d[i - 1, j], n[i - 1, j])] if i else []
            best = max(options, key=lambda x: x[0])
            d[i, j], n[i, j] = a[i, j] + best[0], best[1] + 1
    return d[-1, -1], n[-1, -1]


def test_score_ranks_by_the_plain_dtw_of_each_candidate():
    rng = np.random.default_rng(3)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    frames = unit(rng.standard_normal((12, 8))).astype(np.float32)
    vectors = {"a": unit(rng.standard_normal((3, 8))), "b": unit(rng.standard_normal((4, 8)))}
    emb = VideoEmbedding(frames, np.arange(12) / 4.0, 3.0)
    cal = Calibration("x", 10.0, -2.0)
    pred = score("v", "d", emb, vectors, Method(smooth_seconds=0), cal, {"a": list("xyz"), "b": list("wxyz")})
    for c in pred.candidates:
        aff = align.affinity(frames, vectors[c.action], 10.0, -2.0)
        total, length = plain_dtw(aff)
        assert c.score == pytest.approx(total / length, abs=1e-9)
        assert (
            len(c.path) == length
            and c.path[0].tolist() == [0, 0]
            and c.path[-1].tolist() == [len(aff) - 1, 11]
        )
    assert [c.rank for c in pred.candidates] == [1, 2]
    assert pred.candidates[0].score >= pred.candidates[1].score


def test_actalign_and_the_runner_give_the_same_prediction(tmp_path, siglip_dir, video):
    enc = load_encoder(str(siglip_dir))
    for method in (
        Method("ActAlign"),
        Method("mean-pool", kind="mean-pool"),
        Method("sub", alignment="subsequence"),
    ):
        model = ActAlign(enc, SCRIPTS, fps=5, cache=False, method=method.kind, alignment=method.alignment)
        pred = model.classify(video, ["a", "b"], "t")
        source = ScriptSource()
        source.hand = [SCRIPTS]
        out = tmp_path / method.name
        result = run(
            plan_videos([str(video)], "t", ["a", "b"]),
            enc,
            {"context-rich": source},
            str(out),
            [method],
            fps=5,
            workers=0,
            progress=False,
        )
        assert result.rows[0]["methods"][method.name]["scores"] == [
            round(s, 9) for s in pred.scores_in(["a", "b"])
        ]


# --------------------------------------------------------------------------- one rule for candidates


def test_one_rule_for_candidates_everywhere(tmp_path):
    from actalign.app import parse_candidates

    text = "# from the benchmark\n1. Tip-in \n\n2)  Putback   dunk\n(3) 360 dunk\n"
    expected = ["Tip-in", "Putback dunk", "360 dunk"]
    assert check_candidates(candidates_from_text(text)) == expected
    assert parse_candidates(text) == expected
    manifest = tmp_path / "m.jsonl"
    videos = [make_video(tmp_path / f"v{i}.mp4", n=5) for i in range(3)]
    rows = [
        {"video": str(videos[0]), "domain": "d", "candidates": candidates_from_text(text)},
        {"video": str(videos[1]), "domain": "d", "candidates": ["Tip-in"]},
        {"video": str(videos[2]), "domain": "d", "candidates": ["Tip-in", "tip-IN"]},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    plan = load_manifest(manifest)
    assert [list(c.candidates) for c in plan.clips] == [expected, ["Tip-in"]]  # one candidate is allowed
    assert "given twice" in plan.failures[0]["reason"]
    with pytest.raises(ActAlignError, match="given twice"):
        check_candidates(["Tip-in", "tip-IN"])
    with pytest.raises(ActAlignError, match="No candidate"):
        check_candidates(["  ", "#"[:0]])


# --------------------------------------------------------------------------- the shape of the house

LAYERS = [
    {"errors", "files", "progress", "startup", "exports", "prefetch", "text", "reaper", "precision"},
    {"video", "align", "_dtw", "_affinity", "candidates", "hub"},
    {"encoders"},
    {"embed", "scripts"},
    {"score"},
    {"config"},
    {"classify", "baselines"},
    {"locate", "index", "viz", "runner"},
    {"eval"},
    {"api"},
    {"app", "cli", "__main__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _home(name: str) -> str:
    """The module `from actalign import name` loads: a submodule, or the home of a lazy name."""
    import importlib.util

    import actalign

    if name in actalign._HOMES:
        return actalign._HOMES[name]
    if importlib.util.find_spec(f"actalign.{name}") is not None:
        return f"actalign.{name}"
    return "actalign.errors"  # the package's own light names (__version__, ActAlignError): layer 0


def test_the_layers_are_the_architecture_documents():
    doc = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    documented = [{n.strip(" `") for n in row.split("|")[2].split(",")} for row in rows]
    assert documented == LAYERS


def imports_of(src: Path) -> dict[str, set[str]]:
    graph = {}
    for path in src.rglob("*.py"):
        name = ".".join(path.relative_to(src.parent).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "actalign":  # from actalign import X
                targets |= {_home(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actalign."):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("actalign.")}
        graph[name] = targets
    return graph


def test_no_module_imports_one_above_it_in_the_data_flow():
    src = Path(actalign.embed.__file__).parent
    upward = []
    for module, targets in imports_of(src).items():
        if module == "actalign":
            continue
        for t in targets:
            if _layer(t) > _layer(module):
                upward.append(f"{module} -> {t}")
    assert not upward, upward


def test_no_import_circles_between_modules():
    src = Path(actalign.embed.__file__).parent
    graph = imports_of(src)
    modules = set(graph) | {"actalign._dtw", "actalign._affinity"}  # compiled kernels: modules of their own

    def owner(target: str) -> str:
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        return target

    edges = {m: {owner(t) for t in ts if owner(t) != m} for m, ts in graph.items()}  # parents too
    seen, stack, cycles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append([*stack[stack.index(m) :], m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in edges.get(m, ()):
            visit(n)
        stack.pop()

    for m in sorted(edges):
        visit(m)
    assert not cycles, cycles
