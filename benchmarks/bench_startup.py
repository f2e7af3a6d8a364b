"""Startup benchmark: a fresh process classifying a one-second clip, stage by stage (see
docs/benchmarks.md).

    python benchmarks/bench_startup.py            # tiny and SigLIP-base-size models, 3 runs each
    python benchmarks/bench_startup.py --big      # and so400m size (slow on a CPU)
    python benchmarks/bench_startup.py --dtype bfloat16 --runs 5
    python benchmarks/bench_startup.py --split    # where the imports and the model load go
    python benchmarks/bench_startup.py --loader native   # one loader only (default: both)

Each run is `actalign classify CLIP ... --no-cache -v` in a new process, so nothing is cached
but the files in the page cache (every model is loaded once before the timed runs). Its stages
come from the `startup:` line that `-v` prints: before (from actalign's import to the model
stack's), imports (torch and safetensors / sentencepiece natively, torch and transformers through
transformers), model (load, cast, one text probe), first batch (the first forward pass); `total`
is the process's wall clock, interpreter start and exit included. Each model runs with both
SigLIP loaders (ACTALIGN_LOADER=native: plain torch, `actalign.encoders.native`; =transformers).
Against it, in the same run and interleaved: `python -c "pass"` (the interpreter) and
`python -c "import torch"`. The goal (issue 31): total <= 2.5x `import torch` for the base-size
model on a CPU with bfloat16 units. Medians of `--runs` runs.

The models are random-weight (speed does not depend on the weights) with real shapes: the tests'
tiny SigLIP, SigLIP-base size (both towers 768 wide, 12 layers, 224 px, patch 16: ~200 M
parameters) and so400m size (`bench_encode.so400m`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ("before", "imports", "model", "first batch")


def base_size(directory: Path) -> Path:
    """SigLIP-base size, both towers (768 wide, 12 layers, 12 heads, MLP 3072), 224 px, patch 16."""
    from transformers import SiglipConfig, SiglipModel

    from models import build_siglip

    build_siglip(directory, image_size=224)  # tokenizer and processor
    config = SiglipConfig.from_pretrained(directory)
    for tower in (config.vision_config, config.text_config):
        tower.hidden_size, tower.intermediate_size = 768, 3072
        tower.num_hidden_layers, tower.num_attention_heads = 12, 12
    config.vision_config.patch_size = 16
    config.text_config.projection_size = 768
    SiglipModel(config).save_pretrained(directory)
    return directory


def env(**extra: str) -> dict:
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def wall(cmd: list[str], **extra: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(**extra))
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds, out.stderr


def stages(stderr: str) -> dict[str, float]:
    line = next((x for x in stderr.splitlines() if x.startswith("startup: ")), "")
    return {m[1]: float(m[2]) for m in re.finditer(r"([a-z][a-z ]*?) ([0-9.]+) s", line[9:])}


IMPORTS = """
import sys, time
marks = [("start", time.perf_counter(), time.process_time())]
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
import torch; mark("torch")
import transformers; mark("transformers (its top level)")
import scipy.optimize; mark("scipy.optimize (transformers.loss)")
import torch.distributed.tensor; mark("torch.distributed.tensor (transformers.core_model_loading)")
import torch._dynamo; mark("torch._dynamo (transformers.integrations)")
import transformers.modeling_utils; mark("the rest of transformers.modeling_utils")
import transformers.processing_utils; mark("transformers.processing_utils")
from transformers.models.siglip import modeling_siglip, processing_siglip, tokenization_siglip
mark("transformers' SigLIP modules")
for (name, t, c), (_, t0, c0) in zip(marks[1:], marks):
    print(f"{name}\t{t - t0:.3f}\t{c - c0:.3f}")
"""

LOADER = """
import sys, time, torch
from transformers import AutoModel, SiglipConfig, SiglipModel
torch.set_num_threads(1)
AutoModel.from_pretrained(sys.argv[2])  # its lazy imports and first-call caches, on the tiny model
config = SiglipConfig.from_pretrained(sys.argv[1])
def timed(name, fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    print(f"{name}\t{time.perf_counter() - t:.3f}\t{time.process_time() - c:.3f}")
    return out
timed("SiglipModel(config): weights initialised at random on the CPU", lambda: SiglipModel(config))
model = timed("AutoModel.from_pretrained (transformers 5: meta device, mmap'd safetensors)",
              lambda: AutoModel.from_pretrained(sys.argv[1]))
timed(".to(torch.bfloat16) of the loaded model", lambda: model.to(torch.bfloat16))
print(f"parameters\t{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M\t")
"""


def split(code: str, *argv: str, runs: int) -> list[tuple[str, float, float]]:
    """Medians over fresh processes of a script's (name, wall s, CPU s) lines."""
    got: dict[str, list[tuple[float, float]]] = {}
    extra: dict[str, str] = {}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env())
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        for line in out.stdout.splitlines():
            name, a, b = line.split("\t")
            if b:
                got.setdefault(name, []).append((float(a), float(b)))
            else:
                extra[name] = a
    rows = [
        (n, statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for n, v in got.items()
    ]
    for name, value in extra.items():
        print(f"{name}: {value}")
    return rows


def print_split(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n| {title} | wall s | CPU s |\n|---|---:|---:|")
    for name, w, c in rows:
        print(f"| {name} | {w:.2f} | {c:.2f} |")


def main() -> None:
    from actalign.encoders import cpu
    from media import make_video

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also the so400m-size model")
    ap.add_argument("--dtype", default=None, help="the encoder's dtype (default: the CPU's default)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every process")
    ap.add_argument("--split", action="store_true", help="only the imports' and the loader's split")
    ap.add_argument("--loader", choices=("both", "native", "transformers"), default="both",
                    help="the SigLIP loader(s) to time (ACTALIGN_LOADER)")  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from bench_encode import so400m
    from models import build_siglip

    tmp = Path(tempfile.mkdtemp(prefix="actalign-startup-"))
    colors = [(i * 8, 90, 200) for i in range(30)]
    clip = make_video(tmp / "clip.mp4", n=30, fps=30, size=(320, 240), colors=colors)
    (tmp / "s.json").write_text('{"t": {"x": ["red ball", "blue net"], "y": ["blue net", "red ball"]}}')
    models = [("tiny SigLIP (32 px)", build_siglip(tmp / "tiny"))]
    models.append(("SigLIP-base size", base_size(tmp / "base")))
    if args.big:
        models.append(("so400m size", so400m(tmp / "so400m")))
    py = sys.executable
    dtype = ["--dtype", args.dtype] if args.dtype else []

    def classify(model: Path) -> list[str]:
        return [py, "-m", "actalign", "classify", str(clip), "--domain", "t", "--candidates", "x", "y",
                "--scripts", str(tmp / "s.json"), "--model", str(model), "--device", "cpu",
                "--no-cache", "-q", "-v", *dtype]  # fmt: skip

    if args.split:
        print(f"CPU: {cpu.describe()}; {datetime.date.today()}; medians of {args.runs} fresh processes; "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        print_split("import (in this order, each after the ones above)", split(IMPORTS, runs=args.runs))
        rows = split(LOADER, str(models[1][1]), str(models[0][1]), runs=args.runs)
        print_split("SigLIP-base size, loading (files in the page cache)", rows)
        return
    os.environ["ACTALIGN_HOME"] = str(tmp / "home")
    load_before = os.getloadavg()[0]
    loaders = ("native", "transformers") if args.loader == "both" else (args.loader,)
    rows = [(f"{label}, {loader}", model, loader) for label, model in models for loader in loaders]
    for _, model, loader in rows:  # the files into the page cache
        wall(classify(model), ACTALIGN_LOADER=loader)
    python = {"pass": [], "import torch": []}
    runs: dict[str, list[tuple[float, dict]]] = {label: [] for label, _, _ in rows}
    for _ in range(args.runs):  # interleaved, so that a changing load falls on all alike
        python["pass"].append(wall([py, "-c", "pass"])[0])
        python["import torch"].append(wall([py, "-c", "import torch"])[0])
        for label, model, loader in rows:
            seconds, err = wall(classify(model), ACTALIGN_LOADER=loader)
            runs[label].append((seconds, stages(err)))

    torch_s = statistics.median(python["import torch"])
    print(f"CPU: {cpu.describe()}; {datetime.date.today()}; dtype {args.dtype or cpu.default_cpu_dtype()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; medians of {args.runs} runs; "
          f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")  # fmt: skip
    interpreter = statistics.median(python["pass"])
    print(f"`python -c pass` {interpreter:.2f} s, `python -c 'import torch'` {torch_s:.2f} s\n")
    print("| model, loader | before | imports | model load | first batch | total | total / import torch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, got in runs.items():
        cells = [f"{statistics.median(s.get(name, 0.0) for _, s in got):.2f}" for name in STAGES]
        total = statistics.median(t for t, _ in got)
        print(f"| {label} | {' | '.join(cells)} | {total:.2f} | {total / torch_s:.1f}x |")


if __name__ == "__main__":
    main()
