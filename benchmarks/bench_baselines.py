"""The Table 2 baselines per clip: time and peak memory. Prints a markdown table (docs/benchmarks.md).

    python benchmarks/bench_baselines.py --quick          # tiny X-CLIP and Qwen2-VL: seconds
    python benchmarks/bench_baselines.py --xclip-large    # X-CLIP-L/14, 16 frames of 336 px (~0.6B)
    python benchmarks/bench_baselines.py --vlm-2b         # Qwen2-VL-2B shapes, 8 frames (~2.2B, ~9 GB)
    python benchmarks/bench_baselines.py --xclip-large --vlm-2b --device cuda

Random weights with the real checkpoints' shapes (time and memory do not depend on the weights),
saved to a temporary folder and loaded through the public path (`XClip(path)`, `LocalVLM(path)`).
Each row runs in its own process, so its peak RSS is its own: the model in float32 on the CPU
(bfloat16 on CUDA), loaded, plus one clip. Per clip: the 16 (X-CLIP) or 8 (VLM) frames of the
shared basketball clip (1280x720; random frames when the clip is absent) sampled by segment
centres, their preprocessing, and the model: X-CLIP scores the 5 candidates; the VLM ranks the 5
candidates by log-likelihood and gives its constrained answer. Median of `--runs` after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from actalign.encoders.cpu import cpu_name

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (see actalign/cli/__init__.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "actionatlas-samples"
CANDIDATES = ["Tip-in", "Putback dunk", "Alley-oop Dunk", "Tomahawk Dunk", "Windmill Dunk"]
QUESTION = "What best describes the move made by the man in a black basketball jersey with the number two?"
ROWS = {
    "xclip-tiny": "X-CLIP tiny (test model), 4 frames of 32 px",
    "vlm-tiny": "Qwen2-VL tiny (test model), 8 frames, image size 32",
    "xclip-large": "X-CLIP-L/14 (xclip-large-patch14-16-frames shapes), 16 frames of 336 px",
    "vlm-2b": "Qwen2-VL-2B shapes, 8 frames, image size 448",
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def clip_frames(count: int, seed: int = 0) -> np.ndarray:
    """`count` segment-centre frames of the shared basketball clip, full size (random 720p frames
    when the clip is absent)."""
    from actalign.baselines.common import segment_centres

    path = SHARED / "basketball.mp4"
    if not path.exists():
        return np.random.default_rng(seed).integers(0, 256, (count, 720, 1280, 3), dtype=np.uint8)
    from actalign.video import iter_frames

    total = sum(len(batch.frames) for batch in iter_frames(path))  # two passes: keep only the chosen
    wanted = segment_centres(total, count).tolist()
    kept, i = {}, 0
    for batch in iter_frames(path):
        for frame in batch.frames:
            if i in wanted:
                kept[i] = frame.copy()
            i += 1
    return np.stack([kept[j] for j in wanted])


# ---------------------------------------------------------------------- checkpoints


def xclip_checkpoint(directory: Path, large: bool) -> Path:
    from baseline_models import build_xclip

    if not large:
        return build_xclip(directory, num_frames=4, image_size=32)
    import torch
    from transformers import XCLIPModel

    build_xclip(directory, num_frames=16, image_size=336)  # processor and tokenizer: 336 px
    from transformers import XCLIPConfig

    config = XCLIPConfig.from_pretrained(directory)
    t, v = config.text_config, config.vision_config
    t.vocab_size, t.hidden_size, t.intermediate_size = 49408, 768, 3072
    t.num_hidden_layers, t.num_attention_heads = 12, 12
    v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads = 1024, 4096, 24, 16
    v.patch_size, v.image_size, v.num_frames = 14, 336, 16
    v.mit_hidden_size, v.mit_intermediate_size, v.mit_num_hidden_layers, v.mit_num_attention_heads = (
        768,
        3072,
        1,
        8,
    )
    config.projection_dim, config.prompt_layers, config.prompt_num_attention_heads = 768, 2, 8
    torch.manual_seed(0)
    XCLIPModel(config).to(torch.bfloat16).save_pretrained(directory)  # half the bytes to write
    return directory


QWEN2VL_2B_TEXT = dict(  # Qwen/Qwen2-VL-2B-Instruct's config
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
)
QWEN2VL_2B_VISION = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_size=1536, patch_size=14)


def qwen2vl_2b_config(tokenizer):
    from baseline_models import qwen2vl_config

    return qwen2vl_config(tokenizer, text=QWEN2VL_2B_TEXT, vision=QWEN2VL_2B_VISION)


def vlm_checkpoint(directory: Path, large: bool) -> Path:
    """The tests' tiny Qwen2-VL, or one of Qwen2-VL-2B's shapes (its image processor's patch and
    pixel bounds too), saved in bfloat16 (half the bytes to write; it loads in float32 on a CPU)."""
    import torch

    from baseline_models import build_qwen2vl

    if not large:
        return build_qwen2vl(directory)
    return build_qwen2vl(
        directory, patch=14, image_pixels=12845056, config=qwen2vl_2b_config, dtype=torch.bfloat16
    )


# ---------------------------------------------------------------------- one row (child process)


def run_row(row: str, runs: int, device: str | None) -> dict:
    import torch

    large = row in ("xclip-large", "vlm-2b")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = Path(tmp) / row  # built in another process: its memory is not this row's
        subprocess.run([sys.executable, __file__, "--build", row, str(path)], check=True)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        if row.startswith("xclip"):
            from actalign.baselines.xclip import XClip

            model = XClip(str(path), device=device)
            frames = clip_frames(model.num_frames)
            texts = [f"{c}" for c in CANDIDATES]

            def one_clip():
                return model.score(frames, texts)
        else:
            from actalign.baselines.vlm import LocalVLM

            # the ranked protocol (log-likelihood of each choice number), one answer token: the
            # random weights would otherwise write up to 512 tokens without a digit
            model = LocalVLM(
                str(path),
                device=device,
                protocol="ranked",
                frames=8,
                image_size=448 if large else 32,
                max_new_tokens=1,
            )
            frames = clip_frames(model.frames)

            def one_clip():
                return model.rank(list(frames), QUESTION, CANDIDATES, "basketball")

        loaded = time.perf_counter() - t0
        one_clip()  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            one_clip()
            if device and device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    extra = {}
    if row.startswith("vlm"):
        inputs, _, _ = model.prompt_inputs(list(frames), QUESTION, CANDIDATES, "basketball")
        extra["prompt_tokens"] = int(inputs["input_ids"].shape[1])
    return {
        "row": row,
        "parameters": model.parameters,
        "device": model.device,
        "dtype": str(model.dtype).removeprefix("torch."),
        "build_s": built,
        "load_s": loaded,
        "clip_s": statistics.median(times),
        "runs": runs,
        "peak_rss_gb": peak_rss_gb(),
        "gpu_peak_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        **extra,
    }


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the tiny test models (seconds)")
    parser.add_argument("--xclip-large", action="store_true", help="X-CLIP-L/14 16 frames, real shapes")
    parser.add_argument("--vlm-2b", action="store_true", help="Qwen2-VL-2B shapes, 8 frames")
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs per row (default 3 quick, 2 large)"
    )
    parser.add_argument("--device", default=None, help="cpu (default when no GPU) or cuda")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row, print JSON
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)  # internal: ROW DIR
    args = parser.parse_args()
    if args.build:
        row, where = args.build
        build = xclip_checkpoint if row.startswith("xclip") else vlm_checkpoint
        build(Path(where), large=row in ("xclip-large", "vlm-2b"))
        return
    if args.row:
        print(json.dumps(run_row(args.row, args.runs or 1, args.device)))
        return
    rows = (["xclip-tiny", "vlm-tiny"] if args.quick else []) + ["xclip-large"] * args.xclip_large
    rows += ["vlm-2b"] * args.vlm_2b
    if not rows:
        parser.error("choose --quick, --xclip-large and/or --vlm-2b")

    import torch
    import transformers

    clip = "basketball.mp4 (1280x720)" if (SHARED / "basketball.mp4").exists() else "random 720p frames"
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}; "
        f"clip: {clip}"
    )
    if torch.cuda.is_available() and (args.device or "").startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name()}")
    print()
    print("| model | parameters | device, dtype | load | per clip | peak RSS | notes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        runs = args.runs or (3 if row.endswith("tiny") else 2)
        command = [sys.executable, __file__, "--row", row, "--runs", str(runs)]
        if args.device:
            command += ["--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"| {ROWS[row]} | | | | failed: {tail} | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        notes = [f"median of {r['runs']} after a warm-up"]
        if "prompt_tokens" in r:
            notes.append(f"{r['prompt_tokens']} prompt tokens")
        if r["gpu_peak_gb"]:
            notes.append(f"GPU peak {r['gpu_peak_gb']:.1f} GB")
        print(
            f"| {ROWS[row]} | {r['parameters'] / 1e6:,.1f} M | {r['device']}, {r['dtype']} | "
            f"{r['load_s']:.1f} s | {r['clip_s']:.2f} s | {r['peak_rss_gb']:.2f} GB | {'; '.join(notes)} |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
