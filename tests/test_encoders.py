"""Encoders loaded from tiny checkpoints saved to disk, through the public `load_encoder(path)`."""

from __future__ import annotations

import math
import multiprocessing as mp
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actalign import load_encoder
from actalign.embed import embed_texts, embed_video
from actalign.encoders import hf
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.prefetch import prefetch
from actalign.video import Sampling
from media import make_video


@pytest.fixture(scope="module")
def siglip(siglip_dir):
    return load_encoder(str(siglip_dir), batch_size=4, dtype="float32")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_encoder(str(clip_dir), dtype="float32")


def frames(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- loading


def test_siglip_loads_with_its_calibration(siglip, siglip_dir):
    assert siglip.family == "siglip" and siglip.device == "cpu"
    assert siglip.scale == pytest.approx(10.0, rel=1e-6)  # exp(logit_scale) as saved
    assert siglip.bias == pytest.approx(-2.0)
    assert siglip.identity.startswith("dir:") and siglip.identity.endswith("|float32")
    assert siglip.decode_size == (32, 32)
    assert load_encoder(str(siglip_dir), dtype="float32").identity == siglip.identity  # stable


def test_identity_changes_with_the_weights(tmp_path, siglip):
    from models import build_siglip

    other = load_encoder(str(build_siglip(tmp_path / "other", seed=1)), dtype="float32")
    assert other.identity != siglip.identity


def test_clip_has_no_bias_and_uses_linear_affinity(clip):
    from actalign import align

    assert clip.family == "clip" and clip.bias is None
    assert clip.scale == pytest.approx(math.exp(2.6592), rel=1e-3)  # CLIP's initial logit scale
    cos = align.cosine(clip.encode_images(frames(3)), clip.encode_texts(["a red ball", "blue"]))
    a = align.calibrate(cos, clip.scale, clip.bias)
    np.testing.assert_allclose(a, (1 + cos) / 2)
    assert clip.decode_size == 32  # shorter side, then a centre crop


# --------------------------------------------------------------------------- texts


def test_siglip_texts_are_padded_to_64_tokens(siglip):
    tokens = siglip.tokenize(["a red ball", "the player jumps in basketball"])
    assert tokens["input_ids"].shape == (2, 64)


def test_text_embedding_does_not_depend_on_its_batch(siglip, clip):
    """With dynamic padding a SigLIP text embedding would change with the longest text in its
    batch; padded to max_length it cannot."""
    for enc in (siglip, clip):
        alone = enc.encode_texts(["a red ball"])[0]
        batched = enc.encode_texts(["a red ball", "the player jumps and shoots with his hand in basketball"])[
            0
        ]
        np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_dynamic_padding_would_have_changed_it(siglip):
    """The pitfall the max_length rule avoids, shown on the same model."""
    tok = siglip.processor.tokenizer
    short = tok(["a red ball"], padding=True, return_tensors="pt")
    longer = tok(
        ["a red ball", "the player jumps and shoots with his hand"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        a = hf._features(siglip.model.get_text_features(**short))[0]
        b = hf._features(siglip.model.get_text_features(**longer))[0]
    assert not torch.allclose(a, b, atol=1e-4)


def test_text_shapes_and_unit_norms(siglip, clip):
    for enc in (siglip, clip):
        out = enc.encode_texts(["a", "red ball", "blue net"])
        assert out.shape == (3, enc.dim) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    with pytest.raises(ActAlignError, match="No texts"):
        siglip.encode_texts([])


# --------------------------------------------------------------------------- images


def test_image_shapes_unit_norms_and_batch_invariance(siglip_dir):
    one = load_encoder(str(siglip_dir), batch_size=1, dtype="float32")
    many = load_encoder(str(siglip_dir), batch_size=16, dtype="float32")
    x = frames(7)
    a, b = one.encode_images(x), many.encode_images(x)
    assert a.shape == (7, one.dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("which", ["siglip", "clip"])
def test_fast_pixels_equal_the_processor(which, request):
    """Frames decoded at the encoder's size need no PIL round trip; the result is the same as
    transformers' image processor's (the native SigLIP loader reads its settings from JSON)."""
    from transformers import AutoImageProcessor

    enc = request.getfixturevalue(which)
    x = frames(3, size=32)
    ours = enc._pixels(x)["pixel_values"]
    processor = AutoImageProcessor.from_pretrained(request.getfixturevalue(f"{which}_dir"))
    theirs = processor(images=list(x), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_frames_of_another_size_are_resized(siglip):
    out = siglip.encode_images(frames(2, size=50))
    assert out.shape == (2, siglip.dim)
    with pytest.raises(ActAlignError, match="RGB"):
        siglip.encode_images(np.zeros((2, 32, 32), np.uint8))


def test_features_accepts_tensor_and_output_object():
    """transformers 4.x returns a tensor from get_*_features, 5.x an output object."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    t = torch.randn(2, 4)
    assert hf._features(t) is t
    assert hf._features(BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=t)) is t
    with pytest.raises(ActAlignError):
        hf._features(object())


def test_out_of_memory_is_one_clear_sentence(siglip, monkeypatch):
    def boom(**_):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(siglip.model, "get_image_features", boom)
    with pytest.raises(ActAlignError, match=r"smaller batch \(`batch_size=2`\)"):
        siglip.encode_images(frames(2))


# --------------------------------------------------------------------------- errors


def test_unknown_model_offline():
    with pytest.raises(ActAlignError, match="Could not load model 'nobody/no-such-model'"):
        load_encoder("nobody/no-such-model")


def test_missing_local_directory(tmp_path):
    with pytest.raises(ActAlignError, match="No model directory"):
        load_encoder(str(tmp_path / "nope" / "model"))
    with pytest.raises(ActAlignError, match="No model directory"):
        load_encoder("./not-here")


def test_not_an_image_text_model(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=30
        )
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ActAlignError, match=r"Could not load|supports"):
        load_encoder(str(tmp_path / "bert"))


def test_an_unregistered_backend_and_bad_options(siglip_dir):
    with pytest.raises(ActAlignError, match="open_clip"):
        load_encoder("open_clip:ViT-B-32")
    with pytest.raises(ActAlignError, match="dtype"):
        load_encoder(str(siglip_dir), dtype="int4")
    if not torch.cuda.is_available():
        with pytest.raises(ActAlignError, match="CUDA is not available"):
            load_encoder(str(siglip_dir), device="cuda")


# --------------------------------------------------------------------------- cache


def test_video_cache_hit_is_identical_and_skips_the_model(siglip, tmp_path, monkeypatch):
    video = make_video(tmp_path / "v.mp4", n=12, fps=10)
    cache = EmbeddingCache(tmp_path / "c")
    first = embed_video(siglip, video, Sampling(fps=5), cache)
    assert not first.cached and first.frames.shape == (6, siglip.dim)

    def no_model(*_):
        raise AssertionError("the model was called on a cache hit")

    monkeypatch.setattr(siglip, "encode_images", no_model)
    again = embed_video(siglip, video, Sampling(fps=5), cache)
    assert again.cached
    np.testing.assert_array_equal(again.frames, first.frames)
    np.testing.assert_array_equal(again.timestamps, first.timestamps)


def test_cache_keys_follow_sampling_and_content(siglip, tmp_path):
    video = make_video(tmp_path / "v.mp4", n=12, fps=10)
    cache = EmbeddingCache(tmp_path / "c")
    embed_video(siglip, video, Sampling(fps=5), cache)
    assert not embed_video(siglip, video, Sampling(fps=2), cache).cached
    copy = tmp_path / "renamed.mp4"
    shutil.copy(video, copy)
    assert embed_video(siglip, copy, Sampling(fps=5), cache).cached  # same bytes, new name


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_video_entry_is_recomputed(siglip, tmp_path, damage):
    video = make_video(tmp_path / "v.mp4", n=8, fps=10)
    cache = EmbeddingCache(tmp_path / "c")
    first = embed_video(siglip, video, Sampling(fps=10), cache)
    files = list((tmp_path / "c" / "frames").rglob("*.npz"))  # an index and one block of frames
    assert len(files) == 2
    entry = max(files, key=lambda f: f.stat().st_size)  # the block: the embeddings themselves
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        i = data.find(b"frames.npy") + 200  # inside the frames array
        data[i] ^= 0xFF
    else:
        data = bytearray(b"x" * 100)
    entry.write_bytes(bytes(data))
    again = embed_video(siglip, video, Sampling(fps=10), cache)
    assert not again.cached
    np.testing.assert_allclose(again.frames, first.frames, atol=1e-6)
    assert embed_video(siglip, video, Sampling(fps=10), cache).cached


def test_text_cache_hit_and_corrupt_row(siglip, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "c")
    texts = ["a red ball", "blue net", "a red ball"]
    first = embed_texts(siglip, texts, cache)
    assert first.shape == (3, siglip.dim)
    np.testing.assert_array_equal(first[0], first[2])
    real = siglip.encode_texts
    calls = []
    monkeypatch.setattr(siglip, "encode_texts", lambda t: calls.append(list(t)) or real(t))
    np.testing.assert_array_equal(embed_texts(siglip, texts, cache), first)
    assert calls == []
    from actalign.embed import _text_key

    key = _text_key(siglip, "blue net")
    cache._conn().execute("UPDATE texts SET vec = ? WHERE key = ?", (b"\0" * 8, key))
    np.testing.assert_allclose(embed_texts(siglip, texts, cache), first, atol=1e-6)
    assert calls == [["blue net"]]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTALIGN_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert EmbeddingCache().root == tmp_path / "elsewhere"
    assert EmbeddingCache(tmp_path / "explicit").root == tmp_path / "explicit"


def _writer(args):
    root, worker = args
    cache = EmbeddingCache(root)
    rng = np.random.default_rng(0)  # every process writes the same values
    f = rng.random((50, 8)).astype(np.float32)
    for i in range(30):
        cache.put_frames("shared-key", f, np.arange(50.0), 50.0)
        cache.put_texts({f"k{i}": f[0], "same": f[1]})
        got = cache.get_frames("shared-key")
        assert got is not None and np.array_equal(got[0], f)
    return worker


def test_two_processes_writing_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        assert sorted(pool.map(_writer, [(tmp_path / "c", 0), (tmp_path / "c", 1)])) == [0, 1]
    cache = EmbeddingCache(tmp_path / "c")
    assert cache.get_frames("shared-key") is not None
    assert len(cache.get_texts([f"k{i}" for i in range(30)] + ["same"])) == 31
    assert not list((tmp_path / "c").rglob("*.tmp"))


# --------------------------------------------------------------------------- prefetch


def test_prefetch_keeps_order_and_raises_producer_errors():
    assert list(prefetch(range(10))) == list(range(10))

    def broken():
        yield 1
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(prefetch(broken()))
    it = prefetch(iter(range(1000)), depth=1)
    assert next(it) == 0
    it.close()  # stopping early must not hang


def test_encode_frames_streams_batches(siglip):
    x = frames(9)
    streamed = siglip.encode_frames(iter([x[:4], x[4:8], x[8:]]))
    np.testing.assert_allclose(streamed, siglip.encode_images(x), atol=1e-5)
    assert siglip.encode_frames(iter([])).shape == (0, siglip.dim)


def test_siglip2_fixed_resolution_texts_are_lower_cased(tmp_path, siglip_dir):
    from models import build_siglip

    seen = []

    def spy(encoder):
        real = encoder.processor.tokenizer

        class Spy:
            def __getattr__(self, name):
                return getattr(real, name)

            def __call__(self, texts, **kwargs):
                seen.append(list(texts))
                return real(texts, **kwargs)

        encoder.processor.tokenizer = Spy()
        return encoder

    v2 = spy(
        load_encoder(str(build_siglip(tmp_path / "siglip2-fixed", gemma=True)), device="cpu", dtype="float32")
    )
    assert v2.family == "siglip" and v2.lowercase  # loads as SigLIP; its Gemma tokenizer tells
    v2.encode_texts(["Alley-oop Dunk in Basketball"])
    v1 = spy(load_encoder(str(siglip_dir), device="cpu", dtype="float32"))
    assert not v1.lowercase
    v1.encode_texts(["Alley-oop Dunk in Basketball"])
    assert seen == [["alley-oop dunk in basketball"], ["Alley-oop Dunk in Basketball"]]


def test_the_calibration_is_read_before_a_half_precision_cast(siglip_dir):
    half = load_encoder(str(siglip_dir), device="cpu", dtype="bfloat16")
    assert half.scale == pytest.approx(10.0, rel=1e-6) and half.bias == pytest.approx(-2.0, rel=1e-6)
    assert half.model.logit_scale.dtype == torch.bfloat16  # the model itself is cast


@given(st.integers(16, 4000), st.integers(16, 4000), st.sampled_from([224, 336, 384]))
@settings(max_examples=200, deadline=None)
def test_shortest_edge_sizes_are_the_processors(width, height, edge):
    from transformers.image_transforms import get_resize_output_image_size

    from actalign.video import shortest_edge_size

    image = np.zeros((height, width, 3), np.uint8)
    h, w = get_resize_output_image_size(image, edge, default_to_square=False)
    assert shortest_edge_size(width, height, edge) == (w, h)


# --------------------------------------------------------------------------- your own encoder, the list


def test_the_readme_encoder_example_registers_loads_and_classifies(tmp_path, monkeypatch):
    """The README's example of an encoder of one's own, run as written: a few lines returning
    random unit vectors, registered, loaded by `load_encoder("mine:x")` and used by ActAlign."""
    import json
    import re
    from pathlib import Path

    from actalign import encoders
    from actalign.score import Prediction

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "register_backend(" in b]
    assert len(blocks) == 1, "the README shows how to register an encoder of one's own, once"
    monkeypatch.setattr(encoders, "_BACKENDS", dict(encoders._BACKENDS))  # the registration stays here
    make_video(tmp_path / "clip.mp4", n=20, fps=10)
    steps = ["a player jumps", "the ball goes in"]
    (tmp_path / "scripts.json").write_text(
        json.dumps({"basketball": {"Tip-in": steps, "Putback dunk": steps}})
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert type(namespace["encoder"]).__name__ == "RandomEncoder"
    pred = namespace["pred"]
    assert isinstance(pred, Prediction) and pred.top.action in ("Tip-in", "Putback dunk")
    assert len(pred.timestamps) == 20 and pred.top.segments
    assert "mine" in encoders.backends()


def test_models_lists_backend_parameters_width_and_what_is_on_disk(tmp_path, monkeypatch, capsys):
    """`actalign models`: one row per short name; "on disk" read offline from the Hugging Face cache
    (here a cache holding siglip-base's config and weights, nothing else)."""
    import huggingface_hub.constants

    from actalign.cli import main
    from actalign.encoders import MODELS

    repo = tmp_path / "hub" / "models--google--siglip-base-patch16-224"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    # only the config of clip-b32: not usable offline, so not "on disk"
    other = tmp_path / "hub" / "models--openai--clip-vit-base-patch32"
    (other / "snapshots" / ("b" * 40)).mkdir(parents=True)
    (other / "refs").mkdir()
    (other / "refs" / "main").write_text("b" * 40)
    (other / "snapshots" / ("b" * 40) / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "checkpoint", "backend", "parameters", "width", "on", "disk"]
    rows = {line.split()[0]: line for line in lines[1:] if line.split()[0] in MODELS}
    assert set(rows) == set(MODELS)
    assert rows["siglip-base"].split()[-1] == "yes"
    assert "no (downloaded on first use)" in rows["clip-b32"]
    so400m = " ".join(rows["siglip-so400m"].split()[1:])
    assert so400m == "google/siglip-so400m-patch14-384 native SigLIP 878 M 1152 no (downloaded on first use)"
