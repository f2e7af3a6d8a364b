"""Options and helpers shared by the subcommands. Every value is checked where it is parsed, so a
bad flag is one sentence before any work starts."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from actalign.errors import ActAlignError

# --------------------------------------------------------------------------- value types


STRATEGY_NAMES = ["context-rich", "context-rich-t1", "short-fixed"]  # scripts.prompts.STRATEGIES


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more seconds")
    return value


def window_seconds(text: str) -> float:
    value = seconds(text)
    if value > 3600:
        raise argparse.ArgumentTypeError(
            f"{text} s is longer than any sensible smoothing window (at most 3600)"
        )
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


# --------------------------------------------------------------------------- option groups


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="encoder: short name (actalign models), hub id or local directory "
        "(default google/siglip-so400m-patch14-384)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    g.add_argument(
        "--dtype",
        default=None,
        help="float32, float16, bfloat16 or int8 (CPU) (default: half on GPU; on CPU bfloat16 where it "
        "has bfloat16 units (AMX, AVX-512 BF16), else float32)",
    )
    g.add_argument("--batch-size", type=positive_int, default=None, help="frames per forward pass")
    g.add_argument(
        "--text-encoding",
        choices=["trained", "authors"],
        default="trained",
        help="trained: SigLIP texts padded to 64 tokens without a mask, as the model was trained "
        "(default); authors: the original scripts' dynamic padding with a mask, to match their numbers",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the vision tower (GPU runs)")
    g.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: $ACTALIGN_CACHE_DIR or user cache)"
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")


def add_script_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scripts")
    g.add_argument(
        "--scripts",
        action="append",
        default=[],
        metavar="FILE",
        help="hand-written scripts JSON (repeatable); these win over stored ones",
    )
    g.add_argument("--store", default=None, help="script store (default: $ACTALIGN_HOME/scripts.sqlite)")
    g.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default="context-rich",
        help="prompt strategy: context-rich (T=0.2), context-rich-t1 (the same prompt at T=1.0, the "
        "paper's Table 3 setting) or short-fixed (10 steps of 2-3 words, T=1.0)",
    )
    g.add_argument(
        "--llm",
        default=None,
        metavar="SPEC",
        help="LLM for missing scripts: local:ID_OR_DIR (in-process) or an endpoint (default $ACTALIGN_LLM)",
    )
    g.add_argument(
        "--llm-model", default=None, help="LLM for missing scripts (default $OPENAI_MODEL or gpt-4o)"
    )
    g.add_argument(
        "--llm-base-url", default=None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)"
    )


def add_sampling_options(p: argparse.ArgumentParser, start_end: bool = True) -> None:
    p.add_argument(
        "--fps", type=positive_float, default=None, help="frames sampled per second (default: every frame)"
    )
    if start_end:
        p.add_argument("--start", type=seconds, default=None, help="start time in seconds")
        p.add_argument("--end", type=positive_float, default=None, help="end time in seconds")


def add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smooth", type=window_seconds, default=1.0, help="smoothing window in seconds (0: none)")
    p.add_argument("--template", default="{step} in {domain}", help="step text template")
    p.add_argument(
        "--alignment",
        choices=["global", "subsequence"],
        default="global",
        help="global: the path spans the clip (the paper); subsequence: find the action inside it",
    )


def add_candidate_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--domain", required=required, help="sport or domain, e.g. basketball")
    p.add_argument("--candidates", nargs="+", default=[], metavar="ACTION", help="candidate actions")
    p.add_argument("--candidates-file", default=None, help="candidates, one per line")


def add_classify_options(p: argparse.ArgumentParser, baseline: bool = True) -> None:
    """The options of a classification; `baseline=False` for commands that need alignments."""
    add_candidate_options(p)
    add_sampling_options(p)
    add_method_options(p)
    if baseline:
        p.add_argument(
            "--method",
            choices=["actalign", "mean-pool"],
            default="actalign",
            help="actalign, or the mean-pool baseline (mean frame embedding against one text per "
            "candidate; no alignment, so --smooth, --template and --alignment do not apply)",
        )
    else:
        p.set_defaults(method="actalign")
    add_model_options(p)
    add_script_options(p)
    add_quiet(p)


# --------------------------------------------------------------------------- helpers


def candidates(args) -> list[str]:
    """--candidates plus the lines of --candidates-file ('#' lines are comments), checked."""
    names = list(args.candidates)
    if args.candidates_file:
        from actalign.files import read_text

        text = read_text(args.candidates_file, "candidates file")
        names += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    from actalign.classify import check_candidates

    return check_candidates(names)


def check_writable(path: str | None) -> None:
    """Fail before any heavy work when an output file cannot be written."""
    if path is None:
        return
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ActAlignError(f"The output {p} is a folder; give a file name.")
    blocker = next((a for a in [parent, *parent.parents] if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise ActAlignError(f"Cannot write {p}: {blocker} is a file, not a folder.")
    if not parent.is_dir():
        raise ActAlignError(f"Cannot write {p}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ActAlignError(f"Cannot write {p}: permission denied; choose another place.")
    from actalign.files import check_can_write_in

    check_can_write_in(parent, p)


def make_folder(path: str, what: str) -> Path:
    """A folder that exists and is writable, or one clear error naming it as `what`."""
    from actalign.files import prepare_folder

    return prepare_folder(path, what)


def check_template(args) -> None:
    from actalign.classify import check_template as check

    check(args.template, "{step}")


def script_source(args, need_writer: bool = False):
    from actalign.scripts import ScriptSource, ScriptStore, make_writer

    writer = make_writer(args.llm, args.llm_model, args.llm_base_url, required=need_writer)
    return ScriptSource(args.scripts, ScriptStore(args.store), writer, args.strategy)


def encoder(args):
    from actalign.encoders import DEFAULT_MODEL, load_encoder

    return load_encoder(
        args.model or DEFAULT_MODEL,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        text_encoding=args.text_encoding,
        compile=args.compile,
    )


def cache(args):
    from actalign.encoders.cache import EmbeddingCache

    return None if args.no_cache else EmbeddingCache(args.cache_dir)


def pipeline(args, scripts, enc=None):
    from actalign.classify import ActAlign

    return ActAlign(
        enc or encoder(args),
        scripts,
        fps=args.fps,
        smooth_seconds=args.smooth,
        template=args.template,
        method=args.method,
        cache=cache(args) or False,
        alignment=args.alignment,
    )


def write_output(text: str, output: str | None) -> None:
    """To stdout, or atomically to a file."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from actalign.files import atomic_write_text

    try:
        atomic_write_text(Path(output).expanduser(), text)
    except OSError as e:
        raise ActAlignError(f"Cannot write {output} ({e.strerror}); choose another place.") from None


def add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder (resumable): a path or a pyarrow URI (s3://...)")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="local processes or Ray Data")
    g.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    g.add_argument(
        "--workers", type=positive_int, default=None, help="decode workers (default: one per core)"
    )
    g.add_argument("--limit", type=positive_int, default=None, help="only the first N clips")


def check_out(args) -> None:
    """A local run folder that cannot be used fails here, before any model is loaded (and nothing
    is created yet: a command that fails later leaves no empty folder behind)."""
    from actalign.runner.output import is_uri

    if is_uri(args.out):
        return
    p = Path(args.out).expanduser()
    if p.exists() and not p.is_dir():
        raise ActAlignError(f"The run folder (--out) {p} is a file; give a folder.")
    existing = next((a for a in [p, *p.parents] if a.exists()), Path("."))
    if not existing.is_dir():
        raise ActAlignError(f"Cannot make the run folder {p}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK):
        raise ActAlignError(f"Cannot write to {existing}: permission denied; choose another --out folder.")


def run_options(args) -> dict:
    """The keyword arguments `runner.run` (and `eval.evaluate`) take from the command line."""
    return {
        "fps": args.fps,
        "limit": args.limit,
        "engine": args.engine,
        "workers": args.workers,
        "cache": cache(args),
        "record": run_record(args),
        "ray_address": args.ray_address,
    }


def run_record(args) -> dict:
    """What a run's configuration records of its command line beyond the methods and model."""
    from actalign.runner import file_digest

    return {
        "model": args.model or "default",
        "scripts": [file_digest(f) for f in args.scripts],
        "template": args.template,
    }


def sources_for(args, methods) -> dict:
    """A ScriptSource per script strategy the methods name."""
    sources = {}
    for strategy in sorted({m.strategy for m in methods if m.method == "actalign"}):
        args.strategy = strategy
        sources[strategy] = script_source(args)
    return sources


def report_failures(out: str, failures: list[dict]) -> None:
    if failures:
        first = failures[0]
        where = "" if first.get("rejected") else f"{first['id']}: "  # a row's reason names its line
        rejected = sum(1 for f in failures if f.get("rejected"))
        counts = [f"{len(failures) - rejected} clip(s) failed"] if len(failures) > rejected else []
        counts += [f"{rejected} manifest row(s) rejected"] if rejected else []
        print(
            f"{' and '.join(counts)}; see {out.rstrip('/')}/failed.jsonl (first: {where}{first['reason']})",
            file=sys.stderr,
        )


def check_scripts(plan, sources: dict, methods, limit: int | None = None) -> None:
    """Every clip's scripts exist (or can be generated), checked before any model is loaded."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for m in methods:
        if m.method != "actalign":
            continue
        for c in plan.clips[:limit]:
            actions = wanted.setdefault((m.strategy, c.domain), [])
            actions += [a for a in c.candidates if a not in actions]
    for (strategy, domain), actions in wanted.items():
        sources[strategy].get(domain, actions)
