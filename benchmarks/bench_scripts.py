"""Speed of the in-process script writer (`--llm local:...`) and the cost of constrained decoding:
prints a markdown table (docs/benchmarks.md).

    python benchmarks/bench_scripts.py [--repeats 5] [--vocab 400 32000 128000] [--model DIR]
                                       [--real-size qwen2.5-0.5b qwen2.5-1.5b]

For each vocabulary size, a tiny random-weight Llama (2 layers, 32 wide, the tests' builder) writes
the scripts of 3 actions (short-fixed strategy, one generation, as `LocalWriter.write` does) on the
CPU. Constrained: llguidance's mask from the scripts' JSON schema at every token. Unconstrained: the
same model, prompt and sampling for the same number of new tokens without the mask, timed between
two runs of the constrained one. The tiny model
makes the forward pass nearly free, so the ratio shows the decoding overhead at its worst; with a
real model the forward pass dominates. Medians over seeds; the first run of each kind is a warm-up.

`--real-size` also times models of a real model's shape (Qwen2.5 0.5B / 1.5B Instruct: layers,
widths, 151,936-token vocabulary) with random weights, built in memory (no download): the speed of
a forward pass does not depend on the weights, so this is the CPU speed a real checkpoint of that
size gets, for a fixed 128 new tokens per run (random weights would never end a step early).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ACTIONS = ["Tip-in", "Putback dunk", "Alley-oop Dunk"]


class Timed:
    """Wraps a logits processor and adds up the time spent in it."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def constrained(writer, strategy, ids, seed: int) -> tuple[int, float, float, float]:
    """(new tokens, seconds, seconds in the mask, schema compile seconds) of one constrained run."""
    import torch

    start = time.perf_counter()
    mask = writer._mask(ACTIONS, strategy)
    compile_s = time.perf_counter() - start
    timed = Timed(mask)
    torch.manual_seed(seed)
    new, seconds = writer._generate(ids, strategy.temperature, 4000, timed)
    assert mask.matcher.is_accepting(), "the constrained answer is incomplete"
    return len(new), seconds, timed.seconds / max(timed.calls, 1), compile_s


def run(writer, strategy, seed: int) -> dict:
    """Constrained, unconstrained for as many tokens (same seed), constrained again (the order
    effects cancel); the constrained time is the mean of its two runs."""
    import torch

    messages = [{"role": "user", "content": strategy.render("basketball", ACTIONS)}]
    ids = writer.prompt_ids(messages)
    n, first_s, mask_s, compile_s = constrained(writer, strategy, ids, seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = writer._lm.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=True,
            temperature=strategy.temperature,
            top_k=0,
            top_p=1.0,
            pad_token_id=writer._tokenizer.pad_token_id,
        )
    free_s = time.perf_counter() - start
    assert out.shape[1] - ids.shape[1] == n
    again, second_s, _, _ = constrained(writer, strategy, ids, seed)
    assert again == n, "the seeded constrained runs differ"
    return {
        "tokens": n,
        "constrained": 2 * n / (first_s + second_s),
        "free": n / free_s,
        "mask_ms": 1000 * mask_s,
        "compile_ms": 1000 * compile_s,
    }


def bench(model_dir: Path, repeats: int) -> dict:
    from actalign.scripts.local import LocalWriter
    from actalign.scripts.prompts import SHORT_FIXED

    writer = LocalWriter(str(model_dir), device="cpu")
    writer._load()
    run(writer, SHORT_FIXED, seed=-1 % 2**32)  # warm-up
    runs = [run(writer, SHORT_FIXED, seed) for seed in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["vocab"] = len(writer._tokenizer)
    return med


REAL_SIZES = {  # Qwen2.5-*-Instruct config.json shapes
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
}


def real_size(name: str, tokens: int = 128, repeats: int = 2) -> dict:
    """tok/s of a random model of a real shape, constrained and not, `tokens` new tokens each."""
    import llguidance.hf
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from actalign.scripts.local import LocalWriter
    from actalign.scripts.prompts import CONTEXT_RICH
    from llm_models import build_tokenizer

    tokenizer = build_tokenizer(151_936)
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, **REAL_SIZES[name])
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    writer = LocalWriter(name, device="cpu")
    writer._lm = Qwen2ForCausalLM(config).eval()
    writer._tokenizer = tokenizer
    writer._lltokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=tokenizer.eos_token_id)
    ids = writer.prompt_ids([{"role": "user", "content": CONTEXT_RICH.render("basketball", ACTIONS)}])
    rates: dict[str, list[float]] = {"free": [], "constrained": []}
    for seed in range(repeats + 1):  # the first is a warm-up; the order alternates
        for kind in list(rates)[:: 1 if seed % 2 else -1]:
            mask = writer._mask(ACTIONS, CONTEXT_RICH) if kind == "constrained" else None
            torch.manual_seed(seed)
            new, seconds = writer._generate(ids, CONTEXT_RICH.temperature, tokens, mask)
            if seed:
                rates[kind].append(len(new) / seconds)
    params = sum(p.numel() for p in writer._lm.parameters()) / 1e9
    return {k: statistics.median(v) for k, v in rates.items()} | {"params": params, "prompt": ids.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, nargs="*", default=[400, 32000, 128000])
    parser.add_argument("--model", default=None, help="a local causal LM directory instead")
    parser.add_argument("--real-size", nargs="*", default=[], choices=list(REAL_SIZES))
    args = parser.parse_args()
    import llguidance
    import torch
    import transformers

    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, llguidance {llguidance.__version__}\n"
    )
    print(
        "| model | vocab | new tokens | unconstrained tok/s | constrained tok/s | ratio "
        "| mask ms/token | schema compile ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            targets = [(Path(args.model).name, Path(args.model))]
        else:
            from llm_models import build_causal_lm

            targets = [
                (f"tiny random Llama (2x32), vocab {v}", build_causal_lm(Path(tmp) / f"v{v}", vocab_size=v))
                for v in args.vocab
            ]
        for name, directory in targets:
            m = bench(directory, args.repeats)
            print(
                f"| {name} | {m['vocab']:,} | {m['tokens']:.0f} | {m['free']:.0f} | {m['constrained']:.0f} "
                f"| {m['constrained'] / m['free']:.2f} | {m['mask_ms']:.2f} | {m['compile_ms']:.1f} |",
                flush=True,
            )
    if args.real_size:
        print(
            "\n| random weights, real shape (CPU, float32) | params | prompt tokens "
            "| unconstrained tok/s | constrained tok/s | ratio |"
        )
        print("|---|---|---|---|---|---|")
    for name in args.real_size:
        m = real_size(name)
        print(
            f"| {name} | {m['params']:.2f} B | {m['prompt']} | {m['free']:.1f} | {m['constrained']:.1f} "
            f"| {m['constrained'] / m['free']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
