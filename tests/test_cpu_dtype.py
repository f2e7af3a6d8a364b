"""The precision on CPU: chosen for the CPU (bfloat16 where it has bfloat16 matrix units, float32
elsewhere), overridden by --dtype, recorded in results and cache keys, and faithful to float32.

The CPU's flags are injected through ACTALIGN_CPU_FLAGS (the rest of the suite runs with the
machine's own)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from actalign import ActAlign, load_encoder
from actalign.cli import main
from actalign.embed import embed_texts, embed_video
from actalign.encoders import cpu, hf
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.video import Sampling
from media import SAMPLES, make_video

AMX = "fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16"  # a Xeon with AMX
AVX512_BF16 = "avx2 avx512f avx512_bf16"  # e.g. AMD Zen 4
AVX2 = "fpu sse2 avx avx2 fma"  # this project's EPYC machines


def use_flags(monkeypatch, flags: str | None) -> None:
    if flags is None:
        monkeypatch.delenv(cpu.FLAGS_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu.FLAGS_ENV, flags)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (AMX, True),
        (AVX512_BF16, True),
        ("avx2 amx_bf16", True),
        (AVX2, False),
        ("avx512f avx512bw avx512_vnni", False),  # AVX-512 without its bfloat16 extension
        ("bf16", False),  # an Arm flag: not measured, float32 stays
        ("", False),
    ],
)
def test_bfloat16_units_are_recognised_by_their_flags(flags, expected):
    assert cpu.cpu_has_bf16(set(flags.split())) is expected
    assert cpu.default_cpu_dtype(set(flags.split())) == ("bfloat16" if expected else "float32")


def test_flags_come_from_the_environment_when_set(monkeypatch):
    use_flags(monkeypatch, "avx2, amx_bf16")
    assert cpu.cpu_flags() == {"avx2", "amx_bf16"} and cpu.cpu_has_bf16()
    use_flags(monkeypatch, "")
    assert cpu.cpu_flags() == frozenset() and not cpu.cpu_has_bf16()


def test_flags_otherwise_come_from_proc_cpuinfo(monkeypatch):
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    use_flags(monkeypatch, None)
    lines = [x for x in path.read_text().splitlines() if x.split(":")[0].strip() in ("flags", "Features")]
    expected = set(lines[0].split(":", 1)[1].split()) if lines else set()
    assert cpu.cpu_flags() == expected
    assert cpu.cpu_has_bf16() == bool(expected & {"amx_bf16", "avx512_bf16"})
    assert cpu.cpu_name() and cpu.cpu_name() in cpu.describe()


# --------------------------------------------------------------------------- the choice


@pytest.mark.parametrize(
    ("flags", "expected"), [(AMX, "bfloat16"), (AVX512_BF16, "bfloat16"), (AVX2, "float32")]
)
def test_the_default_on_cpu_follows_the_cpu(siglip_dir, monkeypatch, flags, expected):
    use_flags(monkeypatch, flags)
    enc = load_encoder(str(siglip_dir), device="cpu")
    assert enc.dtype_name == expected and enc.identity.endswith(f"|{expected}")
    want = getattr(torch, expected)
    assert enc.model.vision_model.embeddings.patch_embedding.weight.dtype == want
    assert enc.model.text_model.embeddings.token_embedding.weight.dtype == want  # the text tower too
    assert enc.encode_texts(["a ball"]).dtype == np.float32  # results stay float32 either way
    # Eq. 9's calibration is read before the cast (bfloat16 would make exp(log 10) 9.94)
    assert enc.scale == pytest.approx(10.0, rel=1e-6) and enc.bias == -2.0


def test_dtype_given_overrides_the_choice(siglip_dir, monkeypatch):
    use_flags(monkeypatch, AMX)
    assert load_encoder(str(siglip_dir), device="cpu", dtype="float32").dtype_name == "float32"
    use_flags(monkeypatch, AVX2)
    assert load_encoder(str(siglip_dir), device="cpu", dtype="bfloat16").dtype_name == "bfloat16"
    assert load_encoder(str(siglip_dir), device="cpu", dtype="half").identity.endswith("|float16")
    int8 = load_encoder(str(siglip_dir), device="cpu", dtype="int8")
    assert int8.identity.endswith("|int8")
    quantised = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(int8.model.vision_model.encoder.layers[0].mlp.fc1, quantised)
    assert isinstance(int8.model.text_model.encoder.layers[0].mlp.fc1, quantised)
    with pytest.raises(ActAlignError, match="CPU only"):
        hf.dtype_name_for("int8", "cuda:0")
    with pytest.raises(ActAlignError, match="int8"):
        load_encoder(str(siglip_dir), device="cpu", dtype="int4")


def test_cache_entries_are_apart_per_dtype(siglip_dir, tmp_path, monkeypatch):
    video = make_video(tmp_path / "v.mp4", n=8, fps=4)
    cache = EmbeddingCache(tmp_path / "c")
    use_flags(monkeypatch, AVX2)
    full = load_encoder(str(siglip_dir), device="cpu")
    use_flags(monkeypatch, AMX)
    half = load_encoder(str(siglip_dir), device="cpu")
    assert full.identity != half.identity
    first = embed_video(full, video, Sampling(), cache)
    other = embed_video(half, video, Sampling(), cache)
    assert not other.cached  # bfloat16 never reads float32's entry ...
    assert embed_video(half, video, Sampling(), cache).cached
    again = embed_video(full, video, Sampling(), cache)
    assert again.cached  # ... nor overwrites it
    np.testing.assert_array_equal(again.frames, first.frames)
    assert not np.array_equal(other.frames, first.frames)  # so there was something to mix up
    texts = ["a red ball", "the net"]
    a = embed_texts(full, texts, cache)
    calls = []
    real = half.encode_texts
    monkeypatch.setattr(half, "encode_texts", lambda t: calls.append(list(t)) or real(t))
    embed_texts(half, texts, cache)
    assert calls == [texts]
    np.testing.assert_array_equal(embed_texts(full, texts, cache), a)


# --------------------------------------------------------------------------- recorded


@pytest.fixture
def scripts_file(tmp_path):
    path = tmp_path / "scripts.json"
    path.write_text(json.dumps({"ball": {"dunk": ["player jumps", "dunk"], "pass": ["hand", "ball"]}}))
    return path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_results_and_runs_record_the_dtype(siglip_dir, scripts_file, tmp_path, capsys, monkeypatch):
    video = make_video(tmp_path / "v.mp4", n=8, fps=4)
    base = ["--domain", "ball", "--candidates", "dunk", "pass", "--scripts", scripts_file]
    base += ["--model", siglip_dir, "--no-cache"]
    classify = ["classify", video, *base, "--format", "json"]
    for flags, extra, expected in (
        (AMX, [], "bfloat16"),
        (AMX, ["--dtype", "float32"], "float32"),
        (AVX2, [], "float32"),
        (AVX2, ["--dtype", "int8"], "int8"),
    ):
        use_flags(monkeypatch, flags)
        code, out, err = run_cli([*classify, *extra], capsys)
        assert code == 0, err
        settings = json.loads(out)["videos"][0]["settings"]
        assert settings["dtype"] == expected and settings["model_identity"].endswith(f"|{expected}")

    run = ["batch", video, *base, "--out", tmp_path / "run", "--workers", "1", "--quiet"]
    use_flags(monkeypatch, AVX2)
    code, _, err = run_cli(run, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["dtype"] == "float32"
    use_flags(monkeypatch, AMX)  # the same folder on a CPU with AMX: never mixed into it
    code, _, err = run_cli(run, capsys)
    assert code != 0 and 'dtype: "float32" -> "bfloat16"' in err
    code, _, err = run_cli([*run, "--dtype", "float32"], capsys)  # resumable with the same dtype
    assert code == 0, err


# --------------------------------------------------------------------------- fidelity

WIDTH = 768  # SigLIP base's width (so400m: 1152); error per score falls with the width


def wide_siglip(directory: Path) -> Path:
    """A random SigLIP as wide as SigLIP base (768) but 2 layers deep and 64 px, with the tests'
    calibration (scale 10, bias -2): a score's error from rounding the embeddings shrinks with
    their width (about angle / sqrt(width)), so the tiny 32-wide models overstate it."""
    from transformers import SiglipConfig, SiglipModel

    from models import build_siglip

    build_siglip(directory, image_size=64)  # tokenizer and processor
    config = SiglipConfig.from_pretrained(directory)
    for c in (config.vision_config, config.text_config):
        c.hidden_size, c.intermediate_size, c.num_attention_heads = WIDTH, 4 * WIDTH, 12
    config.vision_config.patch_size = 16
    config.text_config.projection_size = WIDTH
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.0)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    directory = wide_siglip(tmp_path_factory.mktemp("models") / "wide-siglip")
    return {p: load_encoder(str(directory), device="cpu", dtype=p) for p in ("float32", "bfloat16", "int8")}


@pytest.fixture(scope="module")
def outputs(wide, tmp_path_factory):
    """(frame embeddings, step embeddings, scores by action) per case and dtype, computed once."""
    folder = tmp_path_factory.mktemp("fidelity")
    done: dict[tuple[str, str], tuple] = {}

    def get(case: str, dtype: str):
        if (case, dtype) not in done:
            video, domain, candidates = clip_for(case, folder)
            scripts = {c: [f"{c} begins", f"the player {c}", f"{c} ends"] for c in candidates}
            model = ActAlign(wide[dtype], {domain: scripts}, fps=2, cache=False).pipeline()
            emb = model.embed(video)
            steps = model.step_embeddings(scripts, domain)
            pred = model.classify_embedding(str(video), emb, scripts, domain, steps)
            done[case, dtype] = (
                emb.frames,
                np.concatenate(steps),
                {c.action: c.score for c in pred.candidates},
            )
        return done[case, dtype]

    return get


def clip_for(case: str, folder: Path) -> tuple[Path, str, list[str]]:
    if case == "pattern":
        return pattern_video(folder / "p.mp4"), "test", ["red then blue", "a colour change", "grey"]
    if not SAMPLES.exists():
        pytest.skip("../shared/data (the shared clips) is not beside this checkout")
    rows = [json.loads(x) for x in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["video"] == case)
    return SAMPLES / row["video"], row["domain"], row["candidates"]


def pattern_video(path: Path) -> Path:
    if not path.exists():
        rng = np.random.default_rng(0)
        colours = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(16)]
        make_video(path, n=16, fps=4, size=(64, 48), colors=colours)
    return path


@pytest.mark.parametrize("case", ["pattern", "basketball.mp4", "soccer.mp4"])
@pytest.mark.parametrize(
    ("dtype", "min_cos", "max_score_diff"), [("bfloat16", 0.9999, 1e-3), ("int8", 0.999, 5e-3)]
)
def test_embeddings_and_scores_match_float32(outputs, case, dtype, min_cos, max_score_diff):
    """bfloat16 (measured: cosine >= 0.99996, scores within 5e-4 on all six shared clips) and
    int8 (cosine >= 0.9994, scores within 2e-3) against float32, on the same frames and texts."""
    f0, t0, s0 = outputs(case, "float32")
    f1, t1, s1 = outputs(case, dtype)
    assert len(f0) >= 4 and len(t0) >= 9
    assert (f0 * f1).sum(1).min() >= min_cos
    assert (t0 * t1).sum(1).min() >= min_cos
    assert max(abs(s0[c] - s1[c]) for c in s0) <= max_score_diff


@pytest.mark.parametrize("which", ["siglip_dir", "clip_dir"])
def test_bfloat16_on_the_tiny_models(which, request, tmp_path):
    """On the tests' 32-wide models bfloat16 keeps cosine >= 0.9998 to float32 (measured: 0.99990
    on real frames, 0.99982 on random pixels, 0.99988 on texts); their scores move by up to 9e-3,
    as 32 dimensions average out little of the rounding (the wide model above: 5e-4)."""
    directory = str(request.getfixturevalue(which))
    full = load_encoder(directory, device="cpu", dtype="float32")
    half = load_encoder(directory, device="cpu", dtype="bfloat16")
    frames = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    assert (full.encode_images(frames) * half.encode_images(frames)).sum(1).min() >= 0.9998
    video = pattern_video(tmp_path / "p.mp4")
    a, b = embed_video(full, video, Sampling(), None), embed_video(half, video, Sampling(), None)
    assert (a.frames * b.frames).sum(1).min() >= 0.9998
    texts = ["a player kicks the ball", "the red goal net", "his hand with the ball", "jumps"]
    assert (full.encode_texts(texts) * half.encode_texts(texts)).sum(1).min() >= 0.9998
