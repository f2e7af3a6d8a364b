"""The seconds before the first frame (issue 31): commands that load no model import no model
stack, and `-v` says where a loading command's startup went."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from actalign import startup
from actalign.cli import main
from media import make_video

STACK = ("torch", "transformers")


def _fresh(argv: list[str], cwd=None, **environ: str) -> dict:
    """`actalign ARGV` in a fresh process: its exit status, stderr and which of STACK it imported."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from actalign.cli import main
        try:
            code = main({argv!r})
        except SystemExit as e:
            code = e.code
        print(json.dumps({{"code": code, "stack": [m for m in {STACK!r} if m in sys.modules]}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **environ}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@pytest.fixture
def clip(tmp_path):
    levels = [(i * 8 % 255, 90, 200 - i * 5 % 200) for i in range(20)]
    video = make_video(tmp_path / "a.mp4", n=20, fps=10, colors=levels)
    scripts = tmp_path / "s.json"
    scripts.write_text(json.dumps({"t": {"x": ["red ball", "blue net"], "y": ["blue net", "red ball"]}}))
    return video, scripts


def _classify(video, scripts, model, *extra) -> list[str]:
    return ["classify", str(video), "--domain", "t", "--candidates", "x", "y", "--scripts", str(scripts),
            "--model", str(model), "--device", "cpu", "--no-cache", "-q", *extra]  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["classify", "--help"],
        ["scripts", "show"],
        ["models"],
        ["classify", "no-such-clip.mp4", "--domain", "t", "--candidates", "x", "y", "-v"],
        ["classify", "a.mp4", "--domain", "t", "--candidates", "x", "y", "--fps", "-1", "-v"],
        ["batch", "no-such.jsonl", "--out", "run", "-v"],
    ],
    ids=["help", "classify-help", "scripts-show", "models", "missing-clip", "bad-fps", "missing-manifest"],
)
def test_a_command_that_loads_no_model_imports_no_model_stack(argv, tmp_path):
    got = _fresh(argv, cwd=tmp_path)
    assert got["stack"] == [], (argv, got)
    assert "startup:" not in got["stderr"]  # -v says nothing where nothing was loaded


def test_a_finished_run_folder_imports_no_model_stack(tmp_path, siglip_dir, clip):
    video, scripts = clip
    argv = ["batch", str(video), "--domain", "t", "--candidates", "x", "y", "--scripts", str(scripts),
            "--model", str(siglip_dir), "--device", "cpu", "--out", str(tmp_path / "run"),
            "-q", "-v"]  # fmt: skip
    assert main(argv) == 0  # the run, in this process
    again = _fresh(argv)
    assert again["code"] == 0 and again["stack"] == [], again
    assert "startup:" not in again["stderr"]


@pytest.mark.parametrize("loader", ["auto", "transformers"])
def test_verbose_says_where_the_startup_went(tmp_path, siglip_dir, clip, loader):
    video, scripts = clip
    got = _fresh(_classify(video, scripts, siglip_dir, "-v"), ACTALIGN_LOADER=loader)
    # a SigLIP checkpoint in safetensors loads without transformers unless told otherwise
    stack = {"torch", "transformers"} if loader == "transformers" else {"torch"}
    assert got["code"] == 0 and set(got["stack"]) == stack
    lines = [x for x in got["stderr"].splitlines() if x.startswith("startup: ")]
    assert len(lines) == 1, got["stderr"]
    stages = dict(part.rsplit(" ", 2)[:2] for part in lines[0].removeprefix("startup: ").split(", "))
    assert list(stages) == ["before", "imports", "model", "first batch"]
    assert all(float(v) >= 0 for v in stages.values())
    assert float(stages["imports"]) > 0.05  # torch was imported there, in a fresh process


def test_without_verbose_there_is_no_startup_line(tmp_path, siglip_dir, clip, capsys):
    video, scripts = clip
    assert main(_classify(video, scripts, siglip_dir)) == 0
    assert "startup:" not in capsys.readouterr().err
    assert main(_classify(video, scripts, siglip_dir, "-v")) == 0  # in-process: stages anew
    err = capsys.readouterr().err
    assert err.count("startup: ") == 1 and "first batch" in err


def test_stages_count_once_and_in_order():
    startup.begin()
    startup.record("model", 0.5)
    startup.record("model", 9.0)  # only the first counts
    with startup.timed("imports"):
        pass
    assert list(startup.stages()) == ["imports", "model"] and startup.stages()["model"] == 0.5
    assert startup.line().startswith("startup: imports 0.00 s, model 0.50 s")
    startup.begin()
    assert startup.line() is None


# --------------------------------------------------------------------------- the forward pass on CPU


def test_the_in_place_gelu_gives_the_plain_float32_models_numbers(siglip_dir):
    import numpy as np
    import torch
    from transformers import AutoModel

    from actalign import load_encoder
    from actalign.encoders.hf import _features, _unit

    enc = load_encoder(str(siglip_dir), device="cpu", dtype="float32")
    acts = [type(m.activation_fn).__name__ for m in enc.model.modules() if hasattr(m, "activation_fn")]
    assert acts and set(acts) == {"InPlaceGeluTanh"}
    plain = AutoModel.from_pretrained(str(siglip_dir)).float().eval()
    assert {type(m.activation_fn).__name__ for m in plain.modules() if hasattr(m, "activation_fn")} == {
        "GELUTanh"
    }
    frames = np.random.default_rng(0).integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    got = enc.encode_images(frames)
    with torch.inference_mode():
        want = _unit(_features(plain.get_image_features(**enc._pixels(frames))))
    assert float((got * want).sum(1).min()) >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-6)
    texts = ["red ball", "a player jumps with the ball"]
    with torch.inference_mode():
        want_t = _unit(_features(plain.get_text_features(**enc.tokenize(texts))))
    assert float((enc.encode_texts(texts) * want_t).sum(1).min()) >= 0.9999


def test_the_in_place_gelu_leaves_autograd_alone(siglip_dir):
    import torch

    from actalign import load_encoder

    enc = load_encoder(str(siglip_dir), device="cpu", dtype="float32")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    enc.model.get_image_features(pixel_values=x).pooler_output.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
