"""Encoder benchmark: prints a markdown table (see docs/benchmarks.md).

    python benchmarks/bench_encode.py             # CPU: decode-only, encode-only, pipeline
    python benchmarks/bench_encode.py --cpu-precision  # CPU: float32 / bfloat16 / int8, 3 sizes
    python benchmarks/bench_encode.py --gpu-so400m  # GPU: a randomly initialised so400m vision tower
    python benchmarks/bench_encode.py --ops --batch 4  # CPU: a forward pass split by op, per dtype
    python benchmarks/bench_encode.py --gelu --batch 4  # CPU: the tanh-GELU alone, in each form

Two random-weight models built here (throughput does not depend on the weights): the tests'
tiny SigLIP (decode-bound) and a SigLIP-base-sized one at 224 px (encode-bound). The pipeline is
`embed_video`: decoding runs in a background thread while the model encodes, so it should run
at the pace of the slower stage.

--cpu-precision: frames/s of `encode_images` on the clip's frames in each precision the CPU
encoder offers, and each one's lowest cosine to float32 (frames and a few texts), for the tiny,
SigLIP-base-sized and so400m-sized models (random weights, real shapes). Rounds are interleaved
(float32, bfloat16, int8, float32, ...) after a one-frame warm-up of each, so that a machine's
changing load falls on all alike. About 2.5 minutes with `--threads 1` on a 2-core CPU without
bfloat16 units (where bfloat16 is emulated and slow); faster with them. On a machine shared with other
work, `--threads 1` gives the steadier numbers (per core): with every core busy, torch's threads
wait for each other at every operation (the tiny model's float32 fell from ~6,000 to 60 frames/s).

--ops: the SigLIP-base-size vision tower's forward pass in float32, bfloat16, and bfloat16 with
its tanh-GELU computed in float32, split by op group (activation, matmul/linear, attention, norms,
the rest) by torch.profiler's self CPU time, with each one's lowest cosine to float32; then the
tanh-GELU alone in each form. On a CPU without bfloat16 units the bfloat16 numbers are torch's
emulation; they say what a CPU with AMX or AVX-512 BF16 does only when run there.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from actalign import load_encoder
from actalign.embed import embed_video
from actalign.encoders import cpu
from actalign.video import Sampling, iter_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def base_siglip(directory: Path) -> Path:
    """SigLIP-base-sized vision tower (768 wide, 12 layers, 224 px, patch 16), random weights."""
    from transformers import SiglipConfig, SiglipModel

    from models import build_siglip

    build_siglip(directory, image_size=224)  # tokenizer and processor
    config = SiglipConfig.from_pretrained(directory)
    v = config.vision_config
    v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads = 768, 3072, 12, 12
    v.patch_size = 16
    SiglipModel(config).save_pretrained(directory)
    return directory


def so400m(directory: Path) -> Path:
    """SigLIP so400m-patch14-384's vision tower (1152 wide, 27 layers, patch 14, 384 px) with random
    weights and a small text tower of the same width, saved like a hub checkpoint."""
    from transformers import SiglipConfig, SiglipModel

    from models import build_siglip

    build_siglip(directory, image_size=384)
    config = SiglipConfig.from_pretrained(directory)
    v, t = config.vision_config, config.text_config
    v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads = 1152, 4304, 27, 16
    v.patch_size, v.image_size = 14, 384
    t.hidden_size, t.intermediate_size, t.num_attention_heads = 1152, 4304, 16
    SiglipModel(config).save_pretrained(directory)
    return directory


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(enc, video: Path, runs: int) -> tuple[str, ...]:
    """Frames per second of decode alone, encode alone, the pipeline, and pipeline / slower stage."""
    frames = np.concatenate([b.frames for b in iter_frames(video, resize=enc.decode_size)])
    n = len(frames)
    decode = median_seconds(lambda: list(iter_frames(video, resize=enc.decode_size)), runs)
    encode = median_seconds(lambda: enc.encode_images(frames), runs)
    pipeline = median_seconds(lambda: embed_video(enc, video, Sampling(), cache=None), runs)
    slower = max(decode, encode)
    return f"{n / decode:,.0f}", f"{n / encode:,.0f}", f"{n / pipeline:,.0f}", f"{slower / pipeline:.2f}"


def cpu_rows(video: Path, runs: int) -> list[tuple]:
    from models import build_siglip

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="actalign-bench-"))
    for label, directory in (
        ("tiny SigLIP (32 px)", build_siglip(tmp / "tiny")),
        ("SigLIP-base size (224 px)", base_siglip(tmp / "base")),
    ):
        rows.append((label, *measure(load_encoder(str(directory), device="cpu", batch_size=32), video, runs)))
    return rows


PRECISIONS = ("float32", "bfloat16", "int8")
TEXTS = ["a player dribbles the ball", "jumps and shoots", "the ball goes through the net", "a dunk"]


def precision_rows(video: Path) -> list[tuple]:
    """Per model and precision: frames/s of encode_images (wall clock and per CPU-second of the
    process, which a busy machine disturbs less), its ratio to float32, and the lowest cosine to
    float32 of the frames' and the texts' embeddings."""
    from models import build_siglip

    tmp = Path(tempfile.mkdtemp(prefix="actalign-bench-"))
    specs = (  # label, builder, frames, batch, timed rounds, one-frame warm-up
        ("tiny SigLIP (32 px)", build_siglip, 64, 16, 3, True),
        ("SigLIP-base size (224 px)", base_siglip, 4, 4, 1, True),
        ("SigLIP so400m size (384 px)", so400m, 1, 1, 1, False),  # seconds a frame: no warm-up
    )
    rows = []
    for i, (label, build, n, batch, rounds, warm) in enumerate(specs):
        directory = build(tmp / str(i))
        encoders = {
            p: load_encoder(str(directory), device="cpu", dtype=p, batch_size=batch) for p in PRECISIONS
        }
        frames = _frames(video, encoders["float32"].decode_size, n)
        if warm:
            for enc in encoders.values():
                enc.encode_images(frames[:1])  # first-call allocations and weight packing
        wall: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        cpu_time: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        out: dict[str, np.ndarray] = {}
        for _ in range(rounds):  # interleaved: a changing load falls on every precision alike
            for p, enc in encoders.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out[p] = enc.encode_images(frames)
                wall[p].append(time.perf_counter() - t0)
                cpu_time[p].append(time.process_time() - c0)
        texts = {p: enc.encode_texts(TEXTS) for p, enc in encoders.items()}
        per_cpu_s = {p: n / statistics.median(cpu_time[p]) for p in PRECISIONS}
        for p in PRECISIONS:
            rows.append(
                (
                    f"{label}, batch {batch}, {n} frame{'s' if n != 1 else ''}",
                    p,
                    _rate(n / statistics.median(wall[p])),
                    _rate(per_cpu_s[p]),
                    f"{per_cpu_s[p] / per_cpu_s['float32']:.2f}x",
                    f"{float((out[p] * out['float32']).sum(1).min()):.5f}",
                    f"{float((texts[p] * texts['float32']).sum(1).min()):.5f}",
                )
            )
        del encoders
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def _frames(video: Path, size, n: int) -> np.ndarray:
    """n frames spread over the clip at the model's input size (random pixels without the clip)."""
    if video.exists():
        frames = np.concatenate([b.frames for b in iter_frames(video, resize=size)])
        return np.ascontiguousarray(frames[np.linspace(0, len(frames) - 1, n).astype(int)])
    w, h = size if isinstance(size, tuple) else (size, size)
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _rate(fps: float) -> str:
    return f"{fps:,.0f}" if fps >= 100 else f"{fps:.2f}"


def gpu_so400m(batch: int, seconds: float) -> str:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
    )
    model = SiglipVisionModel(cfg).to("cuda", torch.bfloat16).eval()
    x = torch.randn(batch, 3, 384, 384, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        for _ in range(3):
            model(pixel_values=x)
        torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(pixel_values=x)
            n += batch
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - t0)
    return f"{rate:,.0f} frames/s ({torch.cuda.get_device_name()}, bf16, batch {batch})"


OP_GROUPS = (  # (group, what aten op names contain), first match wins
    ("activation (GELU)", ("gelu",)),
    ("attention", ("scaled_dot_product", "softmax", "bmm", "baddbmm")),
    ("matmul / linear", ("addmm", "aten::mm", "linear", "matmul", "conv", "mkldnn")),
    ("norms", ("layer_norm",)),
)


def op_group(name: str) -> str:
    for group, keys in OP_GROUPS:
        if any(k in name for k in keys):
            return group
    return "other elementwise / copies"


class InPlaceGelu(torch.nn.Module):
    """tanh-GELU written over its input (no new activation-sized buffer per layer)."""

    def forward(self, x):
        return torch._C._nn.gelu_(x, approximate="tanh")


class Float32Gelu(torch.nn.Module):
    """tanh-GELU computed in float32 for a lower-precision input, the result cast back."""

    def forward(self, x):
        return torch.nn.functional.gelu(x.float(), approximate="tanh").to(x.dtype)


def ops_split(batch: int, rounds: int) -> list[tuple]:
    """Per dtype: the vision tower's forward (SigLIP-base size, random weights) split by op group,
    by torch.profiler's self CPU time, and the whole forward's wall clock; bfloat16 twice, as is
    and with the activation computed in float32."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        image_size=224, patch_size=16,
    )  # fmt: skip
    torch.manual_seed(0)
    reference = SiglipVisionModel(cfg).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        want = reference(pixel_values=x).pooler_output.float()
    rows = []
    for label, dtype, gelu in (
        ("float32", torch.float32, None),
        ("float32, GELU in place", torch.float32, InPlaceGelu),
        ("bfloat16", torch.bfloat16, None),
        ("bfloat16, GELU in float32", torch.bfloat16, Float32Gelu),
        ("bfloat16, GELU in place", torch.bfloat16, InPlaceGelu),
    ):
        model = SiglipVisionModel(cfg).eval()
        model.load_state_dict(reference.state_dict())
        model.to(dtype)
        if gelu is not None:
            for mlp in (m for m in model.modules() if hasattr(m, "activation_fn")):
                mlp.activation_fn = gelu()
        xi = x.to(dtype)
        with torch.inference_mode():
            got = model(pixel_values=xi).pooler_output.float()  # warm-up (weight packing)
            walls = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                model(pixel_values=xi)
                walls.append(time.perf_counter() - t0)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(pixel_values=xi)
        groups: dict[str, float] = {}
        for e in prof.key_averages():
            if e.key.startswith("aten::"):
                g = op_group(e.key)
                groups[g] = groups.get(g, 0.0) + e.self_cpu_time_total / 1e6
        total = sum(groups.values())
        cos = float(torch.nn.functional.cosine_similarity(got, want).min())
        shares = [f"{groups.get(g, 0.0):.2f} s ({100 * groups.get(g, 0.0) / total:.0f}%)" for g in OP_NAMES]
        rows.append((label, f"{statistics.median(walls):.2f} s", *shares, f"{cos:.6f}"))
    return rows


OP_NAMES = [g for g, _ in OP_GROUPS] + ["other elementwise / copies"]


def sigmoid_gelu(x):
    """tanh-GELU as x * sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3): the same function
    (0.5 (1 + tanh z) = sigmoid(2z)), in four in-place passes instead of torch's tanh."""
    c = 2 * 0.7978845608028654
    u = x * x
    u.mul_(0.044715 * c).add_(c).mul_(x)
    return u.sigmoid_().mul_(x)


def gelu_micro(tokens: int, rounds: int) -> list[tuple]:
    """tanh-GELU alone on a (tokens, 3072) activation: ms per call in each form, and its largest
    error against tanh-GELU in float64 on the same input."""
    gelu = torch.nn.functional.gelu
    x32 = torch.randn(tokens, 3072)
    xb = x32.bfloat16()
    exact = gelu(x32.double(), approximate="tanh")
    forms = (
        ("float32", x32, lambda x: gelu(x, approximate="tanh")),
        ("float32, in place (gelu_)", x32.clone(), InPlaceGelu()),  # its first call is checked
        ("float32, x * sigmoid(2z)", x32, sigmoid_gelu),
        ("float32, erf GELU (another function)", x32, gelu),
        ("bfloat16", xb, lambda x: gelu(x, approximate="tanh")),
        ("bfloat16, in place (gelu_)", xb.clone(), InPlaceGelu()),
        ("bfloat16 in, float32 GELU, bfloat16 out", xb, Float32Gelu()),
        ("bfloat16, x * sigmoid(2z)", xb, sigmoid_gelu),
    )
    rows = []
    for label, x, fn in forms:
        err = float((fn(x).double() - exact).abs().max())
        ms = 1000 * median_seconds(lambda fn=fn, x=x: fn(x), rounds)
        rows.append((label, f"{ms:.1f} ms", f"{err:.1e}"))
    return rows


def _print_gelu(batch: int) -> None:
    print(f"| tanh-GELU alone, ({batch * 197}, 3072), 1 call | ms per call | max error |")
    print("|---|---:|---:|")
    for row in gelu_micro(batch * 197, 15):
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", default=str(SHARED / "actionatlas-samples" / "basketball.mp4"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gpu-so400m", action="store_true")
    parser.add_argument("--cpu-precision", action="store_true")
    parser.add_argument(
        "--ops", action="store_true", help="CPU: a forward pass split by op, float32 and bfloat16"
    )
    parser.add_argument("--gelu", action="store_true", help="CPU: tanh-GELU alone, in each form")
    parser.add_argument("--batch", type=int, default=4, help="frames per forward pass for --ops")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads; "
        f"torch {torch.__version__}; "
        f"{time.strftime('%Y-%m-%d')}; video {Path(args.video).name}"
    )
    print(f"CPU: {cpu.describe()}; default CPU dtype here: {cpu.default_cpu_dtype()}")
    print()
    if args.cpu_precision:
        print(
            "| model (CPU, encode_images) | dtype | frames/s | frames per CPU-second | vs float32 "
            "(CPU time) | min cos to float32, frames | texts |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in precision_rows(Path(args.video)):
            print("| " + " | ".join(row) + " |", flush=True)
        return
    if args.gelu:
        _print_gelu(args.batch)
        return
    if args.ops:
        print(f"SigLIP-base-size vision tower, batch {args.batch}, 224 px, random weights; self CPU time")
        print(f"by torch.profiler; forward: median wall of {args.runs}\n")
        print(f"| dtype | forward | {' | '.join(OP_NAMES)} | min cos to float32 |")
        print("|---|---:|" + "---:|" * len(OP_NAMES) + "---:|")
        for row in ops_split(args.batch, args.runs):
            print("| " + " | ".join(row) + " |", flush=True)
        print()
        _print_gelu(args.batch)
        return
    if args.gpu_so400m:
        print(gpu_so400m(batch=64, seconds=20))
        return
    print("| model (CPU, float32) | decode fps | encode fps | pipeline fps | pipeline / slower stage |")
    print("|---|---|---|---|---|")
    for row in cpu_rows(Path(args.video), args.runs):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
