"""SigLIP without transformers (issue 31): the plain-torch towers, the sentencepiece tokenizer and
the JSON image settings give TransformersEncoder's numbers, identity and behaviour; checkpoints it
cannot take go to transformers; a fresh process classifying with it imports no modeling code."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actalign import load_encoder
from actalign.encoders.hf import TransformersEncoder
from actalign.encoders.native import NativeEncoder, native_reason
from actalign.errors import ActAlignError
from media import make_video
from models import WORDS, build_siglip

TEXTS = ["a red ball", "The Player JUMPS, in basketball!", "blue net " * 40, "ß  é\tgoal </s> kicks"]


def frames(n: int = 5, h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def variant(directory: Path, vision: dict | None = None, text: dict | None = None, **save) -> Path:
    """The tests' tiny SigLIP (its tokenizer and processor) with other tower settings, saved with
    `save` (a `dtype`, a `max_shard_size`, or `bin=True`: pytorch_model.bin instead)."""
    from transformers import SiglipConfig, SiglipModel

    image_size = (vision or {}).get("image_size", 32)
    build_siglip(directory, image_size=image_size)
    config = SiglipConfig.from_pretrained(directory)
    for tower, changes in ((config.vision_config, vision), (config.text_config, text)):
        for key, value in (changes or {}).items():
            setattr(tower, key, value)
    torch.manual_seed(1)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
        model.logit_bias.fill_(-3.25)
    dtype = save.pop("dtype", None)
    (directory / "model.safetensors").unlink()
    if save.pop("bin", False):  # transformers 5 saves safetensors only; older checkpoints have this
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    else:
        (model.to(dtype) if dtype else model).save_pretrained(directory, **save)
    return directory


def both(directory: Path, **options) -> tuple[NativeEncoder, TransformersEncoder]:
    options = {"device": "cpu", "dtype": "float32", **options}
    return NativeEncoder(str(directory), **options), TransformersEncoder(str(directory), **options)


def assert_same_encoder(native, reference, atol: float = 1e-5) -> None:
    assert native.identity == reference.identity
    assert native.scale == reference.scale and native.bias == reference.bias
    assert (native.dim, native.decode_size, native.family) == (reference.dim, reference.decode_size, "siglip")
    assert native.lowercase == reference.lowercase and native.batch_size == reference.batch_size
    for texts in (TEXTS, TEXTS[:1]):
        for key in ("input_ids", "attention_mask"):
            a, b = native.tokenize(texts).get(key), reference.tokenize(texts).get(key)
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), key
        np.testing.assert_allclose(native.encode_texts(texts), reference.encode_texts(texts), atol=atol)
    x = frames()
    np.testing.assert_allclose(native.encode_images(x), reference.encode_images(x), atol=atol)


# --------------------------------------------------------------------------- the same numbers


VARIANTS = {
    "2 heads, 32 px": {},
    "4 heads, 48 px, patch 16": {
        "vision": {"num_attention_heads": 4, "image_size": 48, "patch_size": 16},
        "text": {"num_attention_heads": 4},
    },
    "3 layers, wider MLP, exact GELU": {
        "vision": {"num_hidden_layers": 3, "intermediate_size": 64, "hidden_act": "gelu"},
        "text": {"num_hidden_layers": 1, "hidden_act": "gelu"},
    },
    "1 head, layer-norm eps 1e-5": {
        "vision": {"num_attention_heads": 1, "layer_norm_eps": 1e-5},
        "text": {"num_attention_heads": 1, "layer_norm_eps": 1e-5},
    },
    "float16 weights": {"dtype": torch.float16},
    "sharded": {"max_shard_size": "20KB"},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_native_gives_transformers_numbers(tmp_path, name):
    directory = variant(tmp_path / "m", **VARIANTS[name])
    assert native_reason(str(directory)) is None
    native, reference = both(directory)
    assert_same_encoder(native, reference)
    assert isinstance(load_encoder(str(directory)), NativeEncoder)


def test_the_authors_text_encoding_is_the_same(siglip_dir):
    native, reference = both(siglip_dir, text_encoding="authors")
    assert set(native.tokenize(TEXTS)) == {"input_ids", "attention_mask"}
    assert_same_encoder(native, reference)


def test_the_default_checkpoint_loads_natively_with_its_calibration(siglip_dir):
    enc = load_encoder(str(siglip_dir), dtype="float32")
    assert type(enc) is NativeEncoder and enc.scale == pytest.approx(10.0) and enc.bias == -2.0
    assert enc.identity == TransformersEncoder(str(siglip_dir), dtype="float32").identity
    assert not any(p.is_meta for p in enc.model.parameters())  # every weight came from the file


def test_a_checkpoint_without_a_vision_head(tmp_path):
    """Its texts embed the same; neither loader makes an image embedding out of it."""
    directory = variant(tmp_path / "m", vision={"vision_use_head": False})
    native, reference = both(directory)
    np.testing.assert_allclose(native.encode_texts(TEXTS), reference.encode_texts(TEXTS), atol=1e-5)
    for enc in (native, reference):
        with pytest.raises(ActAlignError):
            enc.encode_images(frames(2))


PIECES = [*WORDS, "</s>", "<unk>", "\u2581", ",", "!?", " ", "\t", "É", "日本", "RED"]


@given(st.lists(st.sampled_from(PIECES), max_size=90))
@settings(max_examples=150, deadline=None)
def test_the_tokenizer_gives_transformers_ids(words):
    text = "".join(words)
    native, reference = _tokenizers()
    assert native(text)["input_ids"] == reference(text)["input_ids"]
    for kwargs in ({"padding": "max_length", "max_length": 64, "truncation": True}, {"padding": True}):
        a, b = (
            native([text, "a ball"], return_tensors="pt", **kwargs),
            reference([text, "a ball"], return_tensors="pt", **kwargs),
        )
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
            a["attention_mask"], b["attention_mask"]
        )


_TOKENIZERS: list = []


def _tokenizers():
    """(native, transformers) tokenizers of one tiny SigLIP, built once."""
    if not _TOKENIZERS:
        import tempfile

        from transformers import AutoTokenizer

        from actalign.encoders.siglip_tokenizer import load_tokenizer

        directory = build_siglip(Path(tempfile.mkdtemp()) / "tok")
        native = load_tokenizer(directory / "spiece.model", directory / "tokenizer_config.json")
        _TOKENIZERS.extend([native, AutoTokenizer.from_pretrained(str(directory))])
    return _TOKENIZERS


# --------------------------------------------------------------------------- precision and options


@pytest.mark.parametrize(("dtype", "atol"), [("bfloat16", 3e-2), ("float16", 5e-3), ("int8", 2e-2)])
def test_other_precisions(siglip_dir, dtype, atol):
    native, reference = both(siglip_dir, dtype=dtype)
    assert native.identity == reference.identity and native.identity.endswith(f"|{dtype}")
    assert native.scale == pytest.approx(10.0, rel=1e-6)  # read before the cast
    if dtype != "int8":
        want = getattr(torch, dtype)
        assert {p.dtype for p in native.model.parameters()} == {want}
    else:
        assert isinstance(
            native.model.text_model.encoder.layers[0].mlp.fc1, torch.ao.nn.quantized.dynamic.Linear
        )
    for a, b in ((native.encode_texts(TEXTS), reference.encode_texts(TEXTS)),
                 (native.encode_images(frames()), reference.encode_images(frames()))):  # fmt: skip
        np.testing.assert_allclose(a, b, atol=atol)
        assert float((a * b).sum(1).min()) > 0.999


def test_options_and_factory(siglip_dir):
    enc = load_encoder(str(siglip_dir), dtype="float32", batch_size=3)
    assert enc.batch_size == 3 and enc.device == "cpu"
    acts = {type(m.activation_fn).__name__ for m in enc.model.modules() if hasattr(m, "activation_fn")}
    assert acts == {"InPlaceGeluTanh"}  # on CPU, as TransformersEncoder does
    again = pickle.loads(pickle.dumps(enc.factory()))()
    assert type(again) is NativeEncoder and again.identity == enc.identity and again.batch_size == 3
    np.testing.assert_array_equal(again.encode_texts(TEXTS), enc.encode_texts(TEXTS))
    with pytest.raises(ActAlignError, match="towers"):
        load_encoder(str(siglip_dir), towers="vision")


def test_compiled_native_encoder_gives_the_plain_numbers(siglip_dir):
    """`compile=True` on the native towers: torch.compile of the image tower, one batch shape (a
    short last batch is padded and cut), the same embeddings as without."""
    compiled = load_encoder(str(siglip_dir), dtype="float32", batch_size=4, compile=True)
    plain = load_encoder(str(siglip_dir), dtype="float32", batch_size=4)
    assert type(compiled) is NativeEncoder and compiled.compiled and not plain.compiled
    images = frames(6)  # a full batch of 4, then 2 padded to 4
    got = compiled.encode_images(images)
    assert got.shape == (6, plain.dim)
    np.testing.assert_allclose(got, plain.encode_images(images), atol=1e-5)
    np.testing.assert_array_equal(compiled.encode_texts(TEXTS), plain.encode_texts(TEXTS))


# --------------------------------------------------------------------------- the text tower alone


def test_the_text_tower_alone_reads_no_vision_weight(tmp_path, monkeypatch):
    import safetensors

    directory = variant(tmp_path / "m", max_shard_size="20KB")
    index = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    vision_only = {f for f in index.values()} - {
        f for k, f in index.items() if not k.startswith("vision_model.")
    }
    assert vision_only  # shards that hold vision weights alone: never opened
    opened, read = [], []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, path, **kwargs):
            opened.append(Path(path).name)
            self.f = real(path, **kwargs)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    text = load_encoder(str(directory), dtype="float32", towers="text")
    assert read and not any(k.startswith("vision_model.") for k in read)
    assert not set(opened) & vision_only
    assert text.model.vision_model is None
    assert not any(name.startswith("vision_model") for name, _ in text.model.named_parameters())
    monkeypatch.undo()
    full = load_encoder(str(directory), dtype="float32")
    assert text.identity == full.identity and (text.scale, text.bias) == (full.scale, full.bias)
    np.testing.assert_array_equal(text.encode_texts(TEXTS), full.encode_texts(TEXTS))
    with pytest.raises(ActAlignError, match=r"text tower only.*towers='both'"):
        text.encode_images(frames(1))


# --------------------------------------------------------------------------- which loader


def test_other_checkpoints_go_to_transformers(tmp_path, clip_dir, siglip_dir, monkeypatch):
    bin_weights = variant(tmp_path / "bin", bin=True)
    gemma = build_siglip(tmp_path / "gemma", gemma=True)
    for directory, why in ((clip_dir, "model type is 'clip'"), (bin_weights, "not safetensors"),
                           (gemma, "GemmaTokenizer")):  # fmt: skip
        assert why in native_reason(str(directory))
        assert type(load_encoder(str(directory), dtype="float32")) is TransformersEncoder
    monkeypatch.setenv("ACTALIGN_LOADER", "transformers")
    assert type(load_encoder(str(siglip_dir), dtype="float32")) is TransformersEncoder
    monkeypatch.setenv("ACTALIGN_LOADER", "native")
    with pytest.raises(ActAlignError, match=r"cannot load without transformers.*model type is 'clip'"):
        load_encoder(str(clip_dir))
    monkeypatch.setenv("ACTALIGN_LOADER", "fast")
    with pytest.raises(ActAlignError, match="ACTALIGN_LOADER"):
        load_encoder(str(siglip_dir))


@pytest.mark.parametrize("loader", ["auto", "transformers"])
def test_a_fresh_classify_imports_no_modeling_code(tmp_path, siglip_dir, loader):
    video = make_video(tmp_path / "a.mp4", n=10, fps=10, colors=[(i * 20, 90, 200) for i in range(10)])
    scripts = tmp_path / "s.json"
    scripts.write_text(json.dumps({"t": {"x": ["red ball", "blue net"], "y": ["blue net", "red ball"]}}))
    code = textwrap.dedent(
        f"""
        import json, sys
        from actalign.cli import main
        code = main(["classify", {str(video)!r}, "--domain", "t", "--candidates", "x", "y", "--scripts",
                     {str(scripts)!r}, "--model", {str(siglip_dir)!r}, "--device", "cpu", "--no-cache", "-q"])
        heavy = ["transformers", "transformers.modeling_utils", "torch._dynamo", "scipy.optimize"]
        print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "ACTALIGN_LOADER": loader}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["code"] == 0
    if loader == "auto":
        assert got["loaded"] == []
    else:  # the check can fail: transformers' loader does import them
        assert "transformers.modeling_utils" in got["loaded"]


def test_a_hub_id_loads_from_the_hub_cache_with_the_same_identity(tmp_path, siglip_dir):
    """A hub id goes through the real lookup (huggingface_hub's cache, offline here): the native
    loader finds the files there and names the snapshot's commit, as transformers does."""
    import shutil

    commit = "c" * 40
    repo = tmp_path / "hub" / "models--acme--tiny-siglip"
    shutil.copytree(siglip_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = textwrap.dedent(
        """
        import json, os
        from actalign import load_encoder
        out = {}
        for loader in ("auto", "transformers"):
            os.environ["ACTALIGN_LOADER"] = loader
            enc = load_encoder("acme/tiny-siglip", device="cpu", dtype="float32")
            out[loader] = [type(enc).__name__, enc.identity, enc.encode_texts(["a red ball"]).tolist()]
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["auto"][0] == "NativeEncoder" and got["transformers"][0] == "TransformersEncoder"
    assert got["auto"][1] == got["transformers"][1] == f"hf:acme/tiny-siglip@{commit}|float32"
    np.testing.assert_allclose(got["auto"][2], got["transformers"][2], atol=1e-6)
