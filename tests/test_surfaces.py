"""Outputs and surfaces: SigLIP texts as trained, text batching, honest segment ends, file modes,
closed pipes, hub loading, progress, several videos at once, readable plots, the API surface and
what a newcomer meets first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from actalign import ActAlign, load_encoder
from actalign.cli import main
from actalign.encoders import hf
from actalign.errors import ActAlignError
from colour_encoder import PALETTE, ColourEncoder
from media import make_video
from models import WORDS

# --------------------------------------------------------------------------- SigLIP texts


def texts_of_lengths(tokenizer, lengths, seed=0) -> list[str]:
    """Texts whose token counts (with the end token) span `lengths`."""
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        words = []
        while len(tokenizer(" ".join(words))["input_ids"]) < n:
            words.append(str(rng.choice(WORDS)))
        out.append(" ".join(words))
    return out


def reference_trained(model, tokenizer, texts) -> np.ndarray:
    """SigLIP as big_vision trained it: padded to 64 tokens, input_ids alone (no mask)."""
    ids = tokenizer(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    with torch.no_grad():
        x = hf._features(model.get_text_features(input_ids=ids)).float()
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


@pytest.fixture(scope="module")
def siglip(siglip_dir):
    return load_encoder(str(siglip_dir), batch_size=4, dtype="float32")


def test_siglip_texts_go_in_as_input_ids_alone(siglip):
    tok = siglip.processor.tokenizer
    texts = texts_of_lengths(tok, [1, 2, 5, 13, 40, 63, 64, 65, 70])
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert min(lengths) <= 2 and max(lengths) >= 70  # texts of 1 to 70 tokens
    assert set(siglip.tokenize(texts)) == {"input_ids"}
    rng = np.random.default_rng(1)
    for _ in range(3):  # mixed batches, in any order
        order = rng.permutation(len(texts))
        mixed = [texts[i] for i in order]
        np.testing.assert_allclose(
            siglip.encode_texts(mixed), reference_trained(siglip.model, tok, mixed), atol=1e-6
        )
    # with the padding mask (the old behaviour) a padded text's embedding is not the model's
    masked = tok(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    with torch.no_grad():
        m = hf._features(siglip.model.get_text_features(**masked)).float()
    m = (m / m.norm(dim=-1, keepdim=True)).numpy()
    gap = np.abs(m - reference_trained(siglip.model, tok, texts)).max(axis=1)
    assert gap[lengths.index(min(lengths))] > 1e-3


def test_authors_text_encoding_reproduces_their_script(siglip_dir):
    """--text-encoding authors: one candidate's steps per call, dynamic padding, with the mask."""
    authors = load_encoder(str(siglip_dir), text_encoding="authors", dtype="float32")
    tok = authors.processor.tokenizer
    steps = texts_of_lengths(tok, [3, 9, 17])
    inputs = tok(steps, padding=True, truncation=True, return_tensors="pt")
    assert "attention_mask" in inputs
    with torch.no_grad():
        x = hf._features(authors.model.get_text_features(**inputs)).float()
    expected = (x / x.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(authors.encode_texts(steps), expected, atol=1e-6)
    trained = load_encoder(str(siglip_dir), dtype="float32")
    assert np.abs(authors.encode_texts(steps) - trained.encode_texts(steps)).max() > 1e-3
    with pytest.raises(ActAlignError, match="Unknown text encoding"):
        load_encoder(str(siglip_dir), text_encoding="bogus")


def test_authors_groups_are_cached_per_group(siglip_dir, tmp_path):
    from actalign.embed import embed_text_groups
    from actalign.encoders.cache import EmbeddingCache

    enc = load_encoder(str(siglip_dir), text_encoding="authors")
    cache = EmbeddingCache(tmp_path / "c")
    a = embed_text_groups(enc, [["red ball", "a player jumps in basketball"], ["red ball"]], cache)
    again = embed_text_groups(enc, [["red ball", "a player jumps in basketball"], ["red ball"]], cache)
    for x, y in zip(a, again):
        np.testing.assert_array_equal(x, y)
    # the same text in another group is padded differently: a different embedding
    assert np.abs(a[0][0] - a[1][0]).max() > 1e-4


@pytest.mark.parametrize("batch_size", [1, 7, 64, 65, 128, 1000])
def test_every_text_is_encoded_whatever_the_batch_size(siglip_dir, batch_size):
    enc = load_encoder(str(siglip_dir), batch_size=batch_size)
    tok = enc.processor.tokenizer
    pool = texts_of_lengths(tok, [2 + i % 30 for i in range(300)], seed=batch_size)
    reference = reference_trained(enc.model, tok, pool)
    for n in (1, 63, 64, 65, 129, 300):
        out = enc.encode_texts(pool[:n])
        assert out.shape == (n, enc.dim)
        np.testing.assert_allclose(out, reference[:n], atol=1e-5)


# --------------------------------------------------------------------------- segments


def test_the_last_segment_ends_with_the_video(tmp_path):
    colours = [PALETTE["red"]] * 12 + [PALETTE["blue"]] * 13  # 2.5 s at 10 fps
    video = make_video(tmp_path / "v.mp4", n=25, fps=10, colors=colours, size=(16, 16))
    model = ActAlign(ColourEncoder(), {"t": {"a": ["red x", "blue x"]}}, fps=4, cache=False)
    pred = model.classify(video, ["a"], "t")
    assert pred.timestamps[-1] + np.median(np.diff(pred.timestamps)) > 2.5  # the old end overshot
    assert pred.top.segments[-1].end == pytest.approx(2.5, abs=1e-6)
    window = model.classify(video, ["a"], "t", start=0.5, end=1.9)
    assert window.top.segments[-1].end == pytest.approx(1.9, abs=1e-6)
    assert window.top.segments[0].start >= 0.5


# --------------------------------------------------------------------------- files and pipes


def test_written_files_get_the_usual_permissions(tmp_path):
    from actalign.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_closed_pipe_ends_quietly(tmp_path):
    scripts = {
        "tennis": {
            f"shot {i}": [f"step one of shot {i} here", f"step two of shot {i} here"] for i in range(3000)
        }
    }
    (tmp_path / "s.json").write_text(json.dumps(scripts))
    env = {**os.environ, "ACTALIGN_HOME": str(tmp_path)}
    exe = [sys.executable, "-m", "actalign"]
    subprocess.run(
        [*exe, "scripts", "import", str(tmp_path / "s.json")], env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [*exe, "scripts", "show", "--domain", "tennis"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # what `| head -2` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first[0].startswith(b"[tennis]")
    assert err == "" and proc.returncode == 141


# --------------------------------------------------------------------------- hub loading


def fake_hub_cache(root: Path, siglip_dir: Path, repo: str) -> str:
    """The layout huggingface_hub keeps downloads in, holding the tiny model."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(siglip_dir, base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return commit


def load_in_subprocess(name: str, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    code = (
        "import sys\nfrom actalign import load_encoder\nfrom actalign.errors import ActAlignError\n"
        f'try:\n    print(load_encoder({name!r}, dtype="float32").identity)\nexcept ActAlignError as e:\n'
        "    print('error:', e, file=sys.stderr); sys.exit(2)\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - t0


def test_a_cached_hub_model_loads_without_the_network(siglip_dir, tmp_path):
    commit = fake_hub_cache(tmp_path / "hub", siglip_dir, "someone/tiny-siglip")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens
    proc, _ = load_in_subprocess("someone/tiny-siglip", env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"hf:someone/tiny-siglip@{commit}|float32"
    assert "Retrying" not in proc.stderr


def test_an_unreachable_hub_is_one_line_within_seconds(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9")
    proc, seconds = load_in_subprocess("someone/not-cached", env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot be reached" in lines[0], proc.stderr
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    proc, _ = load_in_subprocess("someone/not-cached", offline)
    assert proc.returncode == 2 and "HF_HUB_OFFLINE" in proc.stderr
    # the failing call itself takes seconds, not the ~30 s of retries (imports are most of it)
    assert seconds < 25


# --------------------------------------------------------------------------- progress


def classify_args(videos, siglip_dir, scripts_file, *extra):
    return [
        "classify",
        *map(str, videos),
        "--domain",
        "basketball",
        "--candidates",
        "Tip-in",
        "Putback dunk",
        "--scripts",
        str(scripts_file),
        "--model",
        str(siglip_dir),
        "--batch-size",
        "2",
        "--no-cache",
        *extra,
    ]


@pytest.fixture
def scripts_file(tmp_path):
    path = tmp_path / "scripts.json"
    steps = {
        "Tip-in": ["player jumps near the net", "hand taps the ball in"],
        "Putback dunk": ["ball bounces", "dunk"],
    }
    path.write_text(json.dumps({"basketball": steps}))
    return path


def test_progress_in_a_log_is_plain_lines_and_quiet_silences_it(siglip_dir, scripts_file, tmp_path):
    video = make_video(tmp_path / "v.mp4", n=40, fps=10)
    env = {**os.environ, "ACTALIGN_PROGRESS_INTERVAL": "0"}  # a line at every update
    cmd = [sys.executable, "-m", "actalign", *classify_args([video], siglip_dir, scripts_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("[actalign] v.mp4:")]
    assert lines and lines[-1].startswith("[actalign] v.mp4: 40/40 frames")  # total known from probe
    assert "\r" not in proc.stderr and "frames/s" in lines[0]
    quiet = subprocess.run([*cmd, "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "[actalign]" not in quiet.stderr


def test_plain_progress_line_has_rate_and_eta():
    import io

    from actalign.progress import Progress

    out = io.StringIO()
    p = Progress("clips", total=10, unit="clip", stream=out)
    p.done = 4
    p.start -= 8.0  # 8 s for 4 clips
    line = p.line()
    assert line.startswith("[actalign] clips: 4/10 clips, 40%, 0.5 clips/s") and "ETA 0:12" in line


# --------------------------------------------------------------------------- several videos


def test_several_videos_one_bad(siglip_dir, scripts_file, tmp_path, capsys):
    a = make_video(tmp_path / "a.mp4", n=8, fps=8)
    b = make_video(tmp_path / "b.mp4", n=8, fps=8)
    code = main(classify_args([a, tmp_path / "missing.mp4", b], siglip_dir, scripts_file, "--format", "json"))
    out, err = capsys.readouterr()
    assert code == 1
    assert [v["video"] for v in json.loads(out)["videos"]] == [str(a), str(b)]
    assert err.strip().splitlines() == [
        f"error: No such video file: {tmp_path / 'missing.mp4'}. Check the path."  # the path once
    ]


def test_folders_and_globs_expand_to_videos(siglip_dir, scripts_file, tmp_path, capsys):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    make_video(folder / "a.mp4", n=8, fps=8)
    make_video(folder / "sub" / "b.mov", n=8, fps=8)
    (folder / "notes.txt").write_text("not a video")
    assert main(classify_args([folder], siglip_dir, scripts_file, "--format", "jsonl")) == 0
    names = [Path(json.loads(x)["video"]).name for x in capsys.readouterr().out.splitlines()]
    assert names == ["a.mp4", "b.mov"]
    assert main(classify_args([str(folder / "*.mp4")], siglip_dir, scripts_file, "--format", "jsonl")) == 0
    assert [Path(json.loads(x)["video"]).name for x in capsys.readouterr().out.splitlines()] == ["a.mp4"]


def test_results_are_written_as_each_video_finishes(siglip_dir, scripts_file, tmp_path, monkeypatch):
    a = make_video(tmp_path / "a.mp4", n=8, fps=8)
    b = make_video(tmp_path / "b.mp4", n=8, fps=8)
    real = ActAlign.classify
    calls = []

    def crash_on_second(self, video, *args, **kwargs):
        calls.append(video)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(self, video, *args, **kwargs)

    monkeypatch.setattr(ActAlign, "classify", crash_on_second)
    out = tmp_path / "res.json"
    with pytest.raises(RuntimeError, match="power cut"):
        main(classify_args([a, b], siglip_dir, scripts_file, "--format", "json", "-o", str(out)))
    assert [v["video"] for v in json.loads(out.read_text())["videos"]] == [str(a)]


def test_cues_for_several_videos_go_to_a_folder(siglip_dir, scripts_file, tmp_path, capsys):
    a = make_video(tmp_path / "a.mp4", n=8, fps=8)
    b = make_video(tmp_path / "b.mp4", n=8, fps=8)
    code = main(classify_args([a, b], siglip_dir, scripts_file, "--format", "vtt"))
    assert code == 2 and "--output FOLDER" in capsys.readouterr().err
    assert (
        main(classify_args([a, b], siglip_dir, scripts_file, "--format", "vtt", "-o", str(tmp_path / "cues")))
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "cues").iterdir()) == ["a.vtt", "b.vtt"]
    assert (tmp_path / "cues" / "a.vtt").read_text().startswith("WEBVTT")


# --------------------------------------------------------------------------- plots


def test_the_figure_fits_its_data_and_keeps_the_backend(tmp_path):
    import matplotlib

    from actalign.viz import plot_prediction

    order = ["red", "green", "blue"]
    colours = [PALETTE[c] for c in order for _ in range(10)]
    video = make_video(tmp_path / "v.mp4", n=30, fps=10, colors=colours, size=(32, 32))
    long_step = "the red phase where a very long description goes on well past sixty characters of text"
    scripts = {
        "right": [long_step, "the green phase", "the blue phase"],
        "wrong": ["the blue phase", "the red phase"],
    }
    scripts["third"] = ["the green phase", "the red phase"]
    pred = ActAlign(ColourEncoder(), {"t": scripts}, cache=False).classify(
        video, ["wrong", "right", "third"], "t"
    )
    backend = matplotlib.get_backend()
    fig = plot_prediction(pred, tmp_path / "p.png", answer="right", top_k=2)
    assert matplotlib.get_backend() == backend
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    panels = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("#")]
    assert len(panels) == 2  # --top-k
    images = [ax.images[0] for ax in panels]
    lo = min(c.affinity.min() for c in pred.candidates[:2])
    hi = max(c.affinity.max() for c in pred.candidates[:2])
    assert all(im.get_clim() == pytest.approx((lo, hi)) for im in images)  # one scale, fitted
    labels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert labels[0].replace("\n", " ") == long_step and "\n" in labels[0]  # wrapped, not cut
    assert any(ax.get_title(loc="left") == "frames" and len(ax.images) >= 3 for ax in fig.axes)  # thumbnails
    assert len(panels[0].patches) == 3  # each step's segment outlined
    assert any("affinity" in ax.get_ylabel() for ax in fig.axes)  # the colour bar


# --------------------------------------------------------------------------- API surface


def test_frames_in_memory_and_several_videos_at_once(tmp_path):
    colours = [PALETTE["red"]] * 10 + [PALETTE["blue"]] * 10
    frames = np.stack([np.full((16, 16, 3), c, np.uint8) for c in colours])
    model = ActAlign(
        ColourEncoder(), {"t": {"a": ["red x", "blue x"], "b": ["blue x", "red x"]}}, cache=False
    )
    pred = model.classify((frames, 10.0), ["a", "b"], domain="t")
    assert pred.top.action == "a" and pred.top.segments[1].start == pytest.approx(1.0, abs=0.1 + 1e-6)
    assert pred.top.segments[-1].end == pytest.approx(2.0)
    video = make_video(tmp_path / "v.mp4", n=20, fps=10, colors=colours, size=(16, 16))
    both = model.classify_many([video, (frames, 10.0)], ["a", "b"], domain="t")
    assert [p.top.action for p in both] == ["a", "a"]
    text = repr(pred)
    assert text.startswith("Prediction(") and "'a'" in text and len(text) < 200
    with pytest.raises(ActAlignError, match="rate"):
        model.classify(frames, ["a", "b"], domain="t")


def test_public_api_is_documented_and_typed():
    import importlib
    import inspect

    import actalign

    assert (Path(actalign.__file__).parent / "py.typed").exists()
    modules = [
        "actalign.classify",
        "actalign.align",
        "actalign.video",
        "actalign.embed",
        "actalign.exports",
        "actalign.encoders",
        "actalign.encoders.cache",
        "actalign.scripts",
        "actalign.scripts.store",
        "actalign.runner",
        "actalign.eval.evaluate",
        "actalign.locate",
        "actalign.runner.plan",
        "actalign.runner.score",
        "actalign.runner.output",
    ]
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                for m, fn in vars(obj).items():
                    if not m.startswith("_") and inspect.isfunction(fn) and not inspect.getdoc(fn):
                        missing.append(f"{name}.{attr}.{m}")
    assert missing == []


# --------------------------------------------------------------------------- newcomer pass


def test_text_files_and_still_images_are_not_videos(tmp_path):
    from PIL import Image

    from actalign.video import probe

    text = tmp_path / "notes.mp4"  # a misleading suffix: the content decides
    text.write_text("hello, this is not a video\n" * 20)
    image = tmp_path / "frame.png"
    Image.new("RGB", (32, 24), (200, 10, 10)).save(image)
    with pytest.raises(ActAlignError, match="not a video"):
        probe(text)
    with pytest.raises(ActAlignError, match=r"still image \(png_pipe\), not a video"):
        probe(image)


def test_save_arrays_writes_what_the_prediction_holds(siglip_dir, scripts_file, tmp_path, capsys):
    video = make_video(tmp_path / "a.mp4", n=8, fps=8)
    arrays = tmp_path / "arrays"
    args = classify_args(
        [video], siglip_dir, scripts_file, "--format", "json", "--fps", "4", "--save-arrays", str(arrays)
    )
    assert main(args) == 0
    (shown,) = json.loads(capsys.readouterr().out)["videos"]
    saved = np.load(arrays / "a.npz")
    ranked = [c["action"] for c in shown["predictions"]]
    assert list(saved["actions"]) == ranked
    assert len(saved["timestamps"]) == shown["frames"]
    for i, c in enumerate(shown["predictions"]):
        affinity, path = saved[f"affinity_{i}"], saved[f"path_{i}"]
        assert affinity.shape == (len(c["segments"]), shown["frames"])
        assert float(saved[f"score_{i}"]) == pytest.approx(c["score"], abs=1e-6)  # JSON rounds to 6 places
        # the score is the mean affinity along the saved path (DESIGN.md, eq. 6)
        assert affinity[path[:, 0], path[:, 1]].mean() == pytest.approx(c["score"], abs=1e-6)
    assert shown["settings"]["method"] == "actalign" and shown["settings"]["fps"] == 4.0


def test_wilson_interval_matches_its_formula_and_covers_the_rate():
    from actalign.eval.metrics import wilson_interval

    assert wilson_interval(0, 0) is None
    z = 1.959964
    for hits, n in [(0, 5), (3, 6), (6, 6), (41, 100)]:
        lo, hi = wilson_interval(hits, n)
        p = hits / n
        # the interval's ends are the roots of (p - q)^2 = z^2 q (1 - q) / n
        for q in (lo, hi):
            assert (p - q) ** 2 == pytest.approx(z * z * q * (1 - q) / n, abs=1e-12)
        assert 0 <= lo <= p <= hi <= 1
    assert wilson_interval(6, 6)[1] == pytest.approx(1.0)


def test_a_bad_flag_is_one_line_that_points_at_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["classify", "v.mp4", "--fps", "fast"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "--fps" in err and "--help" in err and err.startswith("error: argument --fps")
    assert "actalign classify --help" in err


def test_a_mistyped_model_name_gets_a_suggestion():
    with pytest.raises(ActAlignError, match=r"Unknown model 'siglip-so400n'.*Did you mean 'siglip-so400m"):
        load_encoder("siglip-so400n")


# --------------------------------------------------------------------------- newcomer pass, second round


def test_videos_that_share_a_name_get_files_of_their_own(siglip_dir, scripts_file, tmp_path, capsys):
    from actalign.exports import file_names

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_video(tmp_path / "a" / "clip.mp4", n=8, fps=8)
    second = make_video(tmp_path / "b" / "clip.mp4", n=16, fps=8)
    args = classify_args([tmp_path / "a", tmp_path / "b"], siglip_dir, scripts_file, "--format", "vtt")
    out = tmp_path / "out"
    assert main([*args, "-o", str(out), "--save-arrays", str(tmp_path / "arrays")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a__clip.mp4.vtt", "b__clip.mp4.vtt"]
    frames = {p.name: len(np.load(p)["timestamps"]) for p in (tmp_path / "arrays").iterdir()}
    assert frames == {"a__clip.mp4.npz": 8, "b__clip.mp4.npz": 16}
    assert file_names([str(first), str(second), "x/other.mp4", "x/other.mp4"]) == {
        str(first): "a__clip.mp4",
        str(second): "b__clip.mp4",
        "x/other.mp4": "other.mp4-2",  # the same file twice: the later entry wins, no name is shared
    }


def test_a_place_that_cannot_be_written_is_one_sentence_and_still_an_os_error(tmp_path):
    from actalign.files import WriteError, atomic_write_bytes

    with pytest.raises(
        WriteError, match=r"^Cannot write /proc/actalign-test\.json \(.*\); choose another place\.$"
    ) as e:
        atomic_write_bytes("/proc/actalign-test.json", b"{}")  # a virtual filesystem: not even root writes
    assert isinstance(e.value, ActAlignError) and isinstance(e.value, OSError) and e.value.errno


def test_cli_refuses_what_it_cannot_honour(siglip_dir, scripts_file, tmp_path, capsys):
    video = make_video(tmp_path / "v.mp4", n=8, fps=8)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps(
            {"video": "v.mp4", "domain": "basketball", "candidates": ["Tip-in", "Putback dunk"], "answer": 0}
        )
        + "\n"
    )
    cases = [
        (
            classify_args(
                [video], siglip_dir, scripts_file, "--method", "mean-pool", "--alignment", "subsequence"
            ),
            "mean-pool baseline aligns nothing",
        ),
        (
            classify_args([video], siglip_dir, scripts_file, "-o", str(tmp_path / "not-there" / "x.json")),
            "does not exist",
        ),
        (
            [
                "eval",
                str(manifest),
                "--out",
                str(tmp_path / "r"),
                "--scripts",
                str(scripts_file),
                "--strategies",
                "context-rich",
                "short-fixed",
            ],
            "--scripts files win over every strategy",
        ),
        (
            [
                "batch",
                str(manifest),
                str(video),
                "--out",
                str(tmp_path / "b"),
                "--domain",
                "basketball",
                "--candidates",
                "Tip-in",
                "Putback dunk",
            ],
            "give it alone",
        ),
        (
            [
                "locate",
                str(video),
                "--domain",
                "basketball",
                "--candidates",
                "Tip-in",
                "Putback dunk",
                "--min-score",
                "2",
            ],
            "--min-score must be in [0, 1]",
        ),
    ]
    for args, message in cases:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "b").exists()  # refused before any folder


def test_a_mistyped_flag_is_named_by_its_command_with_the_closest_flag(capsys):
    with pytest.raises(SystemExit):
        main(["classify", "v.mp4", "--domain", "d", "--candidates", "a", "b", "--fpss", "3"])
    err = capsys.readouterr().err.strip()
    assert (
        err == "error: unrecognized arguments: --fpss 3; did you mean --fps? (see actalign classify --help)"
    )


def test_a_lone_frame_lasts_to_the_end_of_its_window():
    from actalign.score import frame_ends

    np.testing.assert_allclose(frame_ends(np.array([4.4]), 4.47), [4.47])
    np.testing.assert_allclose(frame_ends(np.array([4.4])), [4.4])  # no end known: nothing to go by
    np.testing.assert_allclose(frame_ends(np.array([0.0, 0.5, 1.0]), 1.2), [0.5, 1.0, 1.2])
    np.testing.assert_allclose(frame_ends(np.array([0.0, 0.5, 1.0]), 9.0), [0.5, 1.0, 1.5])


def test_numbered_candidates_lose_their_numbers_everywhere(tmp_path):
    from actalign.app import parse_candidates
    from actalign.candidates import check_candidates

    pasted = ["1. Tip-in", " 2) Putback  dunk", "360 dunk"]
    assert check_candidates(pasted) == ["Tip-in", "Putback dunk", "360 dunk"]
    assert parse_candidates("\n".join(pasted)) == ["Tip-in", "Putback dunk", "360 dunk"]
    with pytest.raises(ActAlignError, match="given twice"):
        check_candidates(["1. Tip-in", "tip-in"])


def test_a_refused_configuration_names_the_setting_that_differs():
    from actalign.runner.output import _differences

    old = {
        "fps": 2.0,
        "methods": [{"name": "ActAlign", "smooth": 1.0, "alignment": "global"}],
        "input": "videos:/data/f|domain=basketball|candidates=['Tip-in', 'Putback dunk', 'Alley-oop Dunk']",
    }
    new = {
        **old,
        "methods": [{"name": "ActAlign", "smooth": 0.5, "alignment": "global"}],
        "input": "videos:/data/f|domain=basketball|candidates=['Tip-in', 'Putback dunk']",
    }
    said = _differences(old, new)
    assert "methods[0].smooth: 1.0 -> 0.5" in said
    assert "'Alley-oop Dunk']\" -> " in said  # a long text is shown where it changes
    assert _differences({"fps": None}, {"fps": 4.0}) == "fps: null -> 4.0"


def test_one_sampled_frame_says_how_many_were_there_to_sample(tmp_path):
    from actalign.video import Sampling, read_frames

    video = make_video(tmp_path / "v.mp4", n=16, fps=8)  # frames every 0.125 s up to 1.875 s
    with pytest.warns(UserWarning, match=r"only 1 frame was sampled, of 4 in the chosen span .*raise `fps`"):
        read_frames(video, Sampling(fps=2, start=1.5))
    with pytest.warns(UserWarning, match=r"of 1 in the chosen span .*widen `start`/`end`"):
        read_frames(video, Sampling(start=1.8))
