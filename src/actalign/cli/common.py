"""Options and helpers shared by the subcommands. Every value is checked where it is parsed, so a
bad flag is one sentence before any work starts."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from actalign.errors import ActAlignError
from actalign.text import plural

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


def fps(text: str) -> float:
    """A sampling rate: positive, at most 10,000 (no camera records faster)."""
    value = positive_float(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"{text} fps is more than 10000 (no camera records faster)")
    return value


def seed(text: str) -> int:
    """A random seed, 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text} is not a seed from 0 to 4294967295")
    return value


def bounded(parse, most: float, what: str):
    """An argparse type: `parse`, then at most `most` (`what` says why it is enough)."""

    def check(text: str):
        value = parse(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{text} is more than {most:g} ({what})")
        return value

    check.__name__ = parse.__name__
    return check


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
    from actalign.score import MAX_SMOOTH

    value = seconds(text)
    if value > MAX_SMOOTH:
        raise argparse.ArgumentTypeError(
            f"{text} s is longer than any sensible smoothing window (at most {MAX_SMOOTH:g})"
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
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or progress lines")
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also the log lines and warnings of the libraries underneath (Ray, transformers, torch, "
        "Gradio), hidden otherwise; and, where a model is loaded, one line saying where the seconds "
        "before the first frame went (startup: imports, model, first batch), with --quiet too",
    )


def add_model_options(
    p: argparse.ArgumentParser, default: str = "google/siglip-so400m-patch14-384", search: bool = False
) -> None:
    """The encoder's options; search: only those a search uses (the model, its device and
    precision for new step texts, the cache)."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"encoder: short name (actalign models), hub id or local directory (default: {default})",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    g.add_argument(
        "--dtype",
        default=None,
        help="float32, float16, bfloat16 or int8 (CPU only) (default: half on a GPU; on the CPU "
        "bfloat16 where it has bfloat16 units (AMX, AVX-512 BF16), else float32)",
    )
    if not search:
        _add_encoding_options(g)
    g.add_argument(
        "--cache-dir",
        default=None,
        help="embedding cache folder (default: $ACTALIGN_CACHE_DIR, else the user cache folder)",
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")


def _add_encoding_options(g) -> None:
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="frames per forward pass (default: 64 on a GPU, 16 on the CPU)",
    )
    g.add_argument(
        "--text-encoding",
        choices=["trained", "authors"],
        default="trained",
        help="trained: SigLIP texts padded to 64 tokens without a mask, as the model was trained; "
        "authors: the original scripts' dynamic padding with a mask, to match their numbers",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the vision tower (GPU runs)")


def add_script_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scripts")
    g.add_argument(
        "--scripts",
        action="append",
        default=[],
        metavar="FILE",
        help="hand-written scripts JSON (repeatable); these win over stored ones (default: none, "
        "only the store)",
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
        help="LLM for missing scripts: local:ID_OR_DIR (in-process) or an endpoint (default: "
        "$ACTALIGN_LLM, else the OpenAI settings when set; none: a missing script is an error)",
    )
    g.add_argument(
        "--llm-model",
        default=None,
        help="model name at the LLM endpoint (default: $ACTALIGN_LLM_MODEL, $OPENAI_MODEL or gpt-4o)",
    )
    g.add_argument(
        "--llm-base-url",
        default=None,
        help="OpenAI-compatible endpoint (default: $ACTALIGN_LLM_BASE_URL or $OPENAI_BASE_URL, "
        "else OpenAI's)",
    )


def add_sampling_options(p: argparse.ArgumentParser, start_end: bool = True) -> None:
    p.add_argument("--fps", type=fps, default=None, help="frames sampled per second (default: every frame)")
    if start_end:
        p.add_argument(
            "--start", type=seconds, default=None, help="start time in seconds (default: the beginning)"
        )
        p.add_argument(
            "--end", type=positive_float, default=None, help="end time in seconds (default: the end)"
        )


def add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smooth", type=window_seconds, default=1.0, help="smoothing window in seconds (0: none)")
    p.add_argument(
        "--template", default="{step} in {domain}", help="text of a step for the encoder ({step}, {domain})"
    )
    p.add_argument(
        "--alignment",
        choices=["global", "subsequence"],
        default="global",
        help="global: the path spans the clip (the paper); subsequence: find the action inside it",
    )


def domain_name(text: str) -> str:
    """--domain: printable text (the one rule of `actalign.candidates`)."""
    from actalign.candidates import check_name

    try:
        return check_name(text, "The domain")
    except ActAlignError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_search_options(p: argparse.ArgumentParser, what: str = "occurrences") -> None:
    """The options of a search for occurrences (locate, search): smoothing, the step template,
    the score threshold, non-maximum suppression and the window of frames held at once."""
    p.add_argument("--smooth", type=window_seconds, default=1.0, help="smoothing window in seconds (0: none)")
    p.add_argument(
        "--template", default="{step} in {domain}", help="text of a step for the encoder ({step}, {domain})"
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help=f"keep {what} scoring at least this, 0 to 1 (default: none, every one)",
    )
    p.add_argument(
        "--nms", type=float, default=0.3, help="overlap (IoU) above which the weaker occurrence goes"
    )
    p.add_argument("--window", type=positive_float, default=300.0, help="seconds of frames held at once")


def add_candidate_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--domain",
        type=domain_name,
        required=required,
        help="sport or domain, e.g. basketball"
        + ("" if required else " (default: a manifest's rows name theirs; required with videos)"),
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=[],
        metavar="ACTION",
        help="candidate actions (default: none; give them here, in --candidates-file or both)",
    )
    p.add_argument(
        "--candidates-file",
        default=None,
        metavar="FILE",
        help="candidates, one per line, '#' lines are comments (default: none)",
    )


def add_baseline_options(p: argparse.ArgumentParser) -> None:
    """The X-CLIP checkpoint and the video LLM's settings (the paper's Table 2 peers): one option
    name for one thing, in classify and eval."""
    g = p.add_argument_group("baselines (classify --method xclip|vlm; eval --xclip, --vlm, --table2)")
    g.add_argument(
        "--xclip",
        default=None,
        metavar="ID_OR_DIR",
        help="the X-CLIP checkpoint: classify --method xclip uses it (--model is taken as an alias "
        "there), eval adds the X-CLIP baseline with it (default: none; for classify --method xclip "
        "and eval --table2, microsoft/xclip-large-patch14-16-frames)",
    )
    g.add_argument(
        "--vlm",
        default=None,
        metavar="SPEC",
        help="local:ID_OR_DIR (in-process, transformers) or a model name on the OpenAI-compatible "
        "server at $OPENAI_BASE_URL (default: none)",
    )
    g.add_argument(
        "--vlm-protocol",
        choices=["actionatlas", "ranked"],
        default="actionatlas",
        help="actionatlas: as ActionAtlas measured Table 2's video LLMs (its prompt with numbered "
        "choices, 16 frames at linspace (64 for VideoChat2), Qwen2-VL's frames at most 336*336 "
        "pixels, the answer's first digit, top-1 only); ranked: the same prompt, 8 frames at segment "
        "centres shrunk to 448 px, in process every choice ranked by the log-likelihood of its "
        "number (top-2/3) (default: actionatlas)",
    )
    g.add_argument(
        "--vlm-frames",
        type=positive_int,
        default=None,
        help="frames the video LLM sees per clip (default: the protocol's: 16, 64 for VideoChat2; 8 ranked)",
    )
    g.add_argument(
        "--vlm-image-size",
        type=positive_int,
        default=None,
        help="longest side of each frame given to the video LLM, in pixels (default: the protocol's: "
        "the frame's own size, Qwen2-VL's pixel limit; 448 ranked)",
    )


def baseline_for(args, kind: str, spec: str | None):
    """The X-CLIP or video-LLM baseline the command line names."""
    from actalign.baselines.predict import Baseline

    if kind == "xclip":
        from actalign.baselines.xclip import DEFAULT_XCLIP

        return Baseline.xclip(spec or DEFAULT_XCLIP, device=args.device, dtype=args.dtype)
    if not spec:
        raise ActAlignError("--method vlm needs --vlm local:ID_OR_DIR or --vlm MODEL_ON_A_SERVER.")
    settings = {"protocol": args.vlm_protocol, "frames": args.vlm_frames, "image_size": args.vlm_image_size}
    if spec.lower().startswith("local:"):
        settings.update(device=args.device, dtype=args.dtype)
    return Baseline.vlm(spec, **settings)


def add_classify_options(p: argparse.ArgumentParser, baseline: bool = True) -> None:
    """The options of a classification; `baseline=False` for commands that need alignments."""
    add_candidate_options(p)
    add_sampling_options(p)
    add_method_options(p)
    if baseline:
        p.add_argument(
            "--method",
            choices=["actalign", "mean-pool", "xclip", "vlm"],
            default="actalign",
            help="actalign; mean-pool: the mean frame embedding against one text per candidate; xclip: "
            "X-CLIP's video-text logits (--xclip names the checkpoint, else "
            "microsoft/xclip-large-patch14-16-frames); vlm: a video LLM answers the multiple-choice "
            "question (--vlm). Only actalign aligns: --smooth, --template and --alignment apply to it",
        )
        add_baseline_options(p)
    else:
        p.set_defaults(method="actalign")
    add_model_options(p)
    add_script_options(p)
    add_quiet(p)


# --------------------------------------------------------------------------- helpers


def candidates(args) -> list[str]:
    """--candidates plus the lines of --candidates-file ('#' lines are comments), checked."""
    from actalign.candidates import candidates_from_text, check_candidates
    from actalign.files import read_text

    names = list(args.candidates)
    if args.candidates_file:
        text = read_text(args.candidates_file, "candidates file")
        names += candidates_from_text(text)
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


def front(args):
    """The front door for this command line: `ActAlign` holding the one `Config` of `args`, built
    once (the encoder loads on first use)."""
    from actalign.api import ActAlign
    from actalign.config import Config

    return ActAlign(Config.from_args(args))


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


def add_engine_options(
    g, engine_help: str, workers: str | None = "decode workers (default: one per core)"
) -> None:
    """--engine local|ray, --ray-address and (when `workers` says what they are) --workers."""
    g.add_argument("--engine", choices=["local", "ray"], default="local", help=engine_help)
    g.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    if workers:
        g.add_argument("--workers", type=positive_int, default=None, help=workers)


def add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder (resumable): a path or a pyarrow URI (s3://...)")
    add_engine_options(g, "local: processes on this machine; ray: Ray Data")
    g.add_argument(
        "--limit", type=positive_int, default=None, help="only the first N clips (default: every clip)"
    )
    g.add_argument(
        "--recorded-scripts",
        action="store_true",
        help="on resume, keep using the scripts this run recorded (its scripts.json) even where the "
        "files or the store now hold other steps; without it, such a change refuses the resume",
    )


def check_out(args) -> None:
    """A local run folder that cannot be used fails here, before any model is loaded (and nothing
    is created yet: a command that fails later leaves no empty folder behind)."""
    from actalign.runner.output import check_out as usable
    from actalign.runner.output import is_uri

    usable(args.out)
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


def report_failures(out: str, failures: list[dict]) -> None:
    if failures:
        first = failures[0]
        where = "" if first.get("rejected") else f"{first['id']}: "  # a row's reason names its line
        rejected = sum(1 for f in failures if f.get("rejected"))
        failed = len(failures) - rejected
        counts = [f"{plural(failed, 'clip')} failed"] if failed else []
        counts += [f"{plural(rejected, 'manifest row')} rejected"] if rejected else []
        print(
            f"{' and '.join(counts)}; see {out.rstrip('/')}/failed.jsonl (first: {where}{first['reason']})",
            file=sys.stderr,
        )
