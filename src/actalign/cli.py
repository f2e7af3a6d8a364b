"""The `actalign` command: a thin layer over the library.

Errors users can cause print one sentence on stderr and exit with status 2 (1 when some of
several videos failed); nothing is half-written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from actalign import __version__
from actalign.errors import ActAlignError

# --------------------------------------------------------------------------- arguments


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="encoder: short name, hub id or local directory (default google/siglip-so400m-patch14-384)",
    )
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    g.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: half on GPU)")
    g.add_argument("--batch-size", type=int, default=None, help="frames per forward pass")
    g.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: $ACTALIGN_CACHE_DIR or user cache)"
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")


def _add_script_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scripts")
    g.add_argument(
        "--scripts",
        action="append",
        default=[],
        metavar="FILE",
        help="hand-written scripts JSON (repeatable); these win over stored ones",
    )
    g.add_argument("--store", default=None, help="script store (default: $ACTALIGN_HOME/scripts.sqlite)")
    g.add_argument("--strategy", default="context-rich", help="context-rich (default) or short-fixed")
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


def _add_classify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", required=True, help="sport or domain, e.g. basketball")
    p.add_argument("--candidates", nargs="+", default=[], metavar="ACTION", help="candidate actions")
    p.add_argument("--candidates-file", default=None, help="candidates, one per line")
    p.add_argument("--fps", type=float, default=None, help="frames sampled per second (default: every frame)")
    p.add_argument("--start", type=float, default=None, help="start time in seconds")
    p.add_argument("--end", type=float, default=None, help="end time in seconds")
    p.add_argument("--smooth", type=float, default=1.0, help="smoothing window in seconds (0: none)")
    p.add_argument("--template", default="{step} in {domain}", help="step text template")
    p.add_argument("--method", choices=["actalign", "mean-pool"], default="actalign")
    _add_model_options(p)
    _add_script_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actalign",
        description="Zero-shot fine-grained video classification by aligning LLM-written step "
        "scripts to video frames (ActAlign).",
    )
    parser.add_argument("--version", action="version", version=f"actalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="rank candidate actions for videos")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    _add_classify_options(p)
    p.add_argument("--top-k", type=int, default=None, help="show the K best candidates")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--output", "-o", default=None, help="write results here instead of stdout")
    p.add_argument("--plot", default=None, metavar="DIR", help="also save a plot per video in DIR")

    p = sub.add_parser("plot", help="draw the alignment heatmaps of one video (paper Figure 4)")
    p.add_argument("video", metavar="VIDEO")
    _add_classify_options(p)
    p.add_argument("--out", required=True, help="output .png or .svg")
    p.add_argument("--answer", default=None, help="the correct candidate, to mark it")

    p = sub.add_parser("scripts", help="generate, show, export, import scripts; statistics")
    ssub = p.add_subparsers(dest="scripts_command", required=True)
    g = ssub.add_parser("generate", help="write scripts with the LLM and store them")
    g.add_argument("--domain", default=None)
    g.add_argument("--candidates", nargs="+", default=[], metavar="ACTION")
    g.add_argument("--manifest", default=None, help="JSONL manifest: scripts for every row's candidates")
    _add_script_options(g)
    s = ssub.add_parser("show", help="print stored scripts")
    s.add_argument("--domain", default=None)
    s.add_argument("--store", default=None)
    e = ssub.add_parser("export", help="write the store's scripts to a JSON file")
    e.add_argument("file")
    e.add_argument("--store", default=None)
    i = ssub.add_parser("import", help="import a scripts JSON (ours or the authors' format)")
    i.add_argument("file")
    i.add_argument("--store", default=None)
    t = ssub.add_parser("stats", help="steps per action and words per step (paper Table 1)")
    t.add_argument("--store", default=None)
    t.add_argument("--scripts", default=None, metavar="FILE", help="a scripts file instead of the store")

    from actalign.eval.cli import add_eval_parser

    add_eval_parser(sub)

    sub.add_parser("models", help="list the short model names")
    return parser


# --------------------------------------------------------------------------- helpers


def _candidates(args) -> list[str]:
    names = list(args.candidates)
    if args.candidates_file:
        try:
            text = Path(args.candidates_file).read_text(encoding="utf-8")
        except OSError as e:
            raise ActAlignError(
                f"Cannot read the candidates file {args.candidates_file} ({e.strerror})."
            ) from None
        names += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    from actalign.classify import check_candidates

    return check_candidates(names)


def _check_writable(path: str | None) -> None:
    """Fail before any heavy work when an output cannot be written."""
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ActAlignError(f"The output {p} is a folder; give a file name.")
    if not parent.is_dir():
        raise ActAlignError(f"Cannot write {p}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ActAlignError(f"Cannot write {p}: permission denied; choose another place.")


def _check_plot_dir(path: str | None) -> None:
    if path is None:
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ActAlignError(f"Cannot create the plot folder {path} ({e.strerror}).") from None
    if not os.access(path, os.W_OK):
        raise ActAlignError(f"Cannot write plots to {path}: permission denied.")


def _script_source(args, need_writer: bool = False):
    from actalign.scripts import ScriptSource, ScriptStore, make_writer

    writer = make_writer(args.llm, args.llm_model, args.llm_base_url, required=need_writer)
    return ScriptSource(args.scripts, ScriptStore(args.store), writer, args.strategy)


def _encoder(args):
    from actalign.encoders import DEFAULT_MODEL, load_encoder

    return load_encoder(
        args.model or DEFAULT_MODEL, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )


def _pipeline(args, scripts):
    from actalign.classify import ActAlign
    from actalign.encoders.cache import EmbeddingCache

    encoder = _encoder(args)
    cache = False if args.no_cache else EmbeddingCache(args.cache_dir)
    return ActAlign(
        encoder,
        scripts,
        fps=args.fps,
        smooth_seconds=args.smooth,
        template=args.template,
        method=args.method,
        cache=cache,
    )


def _progress(total: str):
    from tqdm import tqdm

    return tqdm(desc=total, unit="frame", disable=not sys.stderr.isatty(), leave=False)


def _check_video(path: str) -> None:
    """Missing, corrupt or video-less files fail here, before any model is loaded."""
    from actalign.video import probe

    probe(path)


def _write_output(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    from actalign.encoders.cache import atomic_write_bytes

    try:
        atomic_write_bytes(Path(output), text.encode())
    except OSError as e:
        raise ActAlignError(f"Cannot write {output} ({e.strerror}); choose another place.") from None


# --------------------------------------------------------------------------- formatting


def format_table(predictions, top_k: int | None) -> str:
    out = []
    for p in predictions:
        out.append(f"{p.video}  ({p.domain}, {len(p.timestamps)} frames, {p.method})")
        out.append(f"  {'rank':>4}  {'score':>7}  action")
        for c in p.candidates[:top_k]:
            out.append(f"  {c.rank:>4}  {c.score:7.4f}  {c.action}")
        if p.top.segments:
            out.append(f"  steps of {p.top.action!r}:")
            for s in p.top.segments:
                out.append(f"    {s.start:7.2f} - {s.end:6.2f} s  {s.step}")
        out.append("")
    return "\n".join(out)


def format_json(predictions, top_k: int | None) -> str:
    videos = []
    for p in predictions:
        d = p.to_dict()
        d["predictions"] = d["predictions"][:top_k]
        videos.append(d)
    return json.dumps({"videos": videos}, indent=2, ensure_ascii=False) + "\n"


def format_csv(predictions, top_k: int | None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["video", "domain", "method", "rank", "action", "score"])
    for p in predictions:
        for c in p.candidates[:top_k]:
            w.writerow([p.video, p.domain, p.method, c.rank, c.action, f"{c.score:.6f}"])
    return buf.getvalue()


FORMATS = {"table": format_table, "json": format_json, "csv": format_csv}


# --------------------------------------------------------------------------- commands


def cmd_classify(args) -> int:
    candidates = _candidates(args)
    _check_writable(args.output)
    if args.plot and args.method != "actalign":
        raise ActAlignError(
            "--plot draws alignments; the mean-pool baseline has none. Use --method actalign."
        )
    _check_plot_dir(args.plot)
    if args.top_k is not None and args.top_k < 1:
        raise ActAlignError("--top-k must be at least 1.")
    for v in args.videos:
        _check_video(v)
    scripts = None
    if args.method == "actalign":
        scripts = _script_source(args)
        scripts.get(args.domain, candidates)  # missing scripts: say so before loading any model
    model = _pipeline(args, scripts)
    predictions, failed = [], 0
    for video in args.videos:
        try:
            with _progress(Path(video).name) as bar:
                pred = model.classify(
                    video, candidates, args.domain, args.start, args.end, on_frames=bar.update
                )
        except ActAlignError as e:
            if len(args.videos) == 1:
                raise
            print(f"error: {video}: {e}", file=sys.stderr)
            failed += 1
            continue
        predictions.append(pred)
        if args.plot:
            from actalign.viz import plot_prediction

            plot_prediction(pred, Path(args.plot) / f"{Path(video).stem}.png")
    _write_output(FORMATS[args.format](predictions, args.top_k), args.output)
    return 1 if failed else 0


def cmd_plot(args) -> int:
    candidates = _candidates(args)
    if args.method != "actalign":
        raise ActAlignError("Plots show alignments; use --method actalign.")
    if Path(args.out).suffix.lower() not in (".png", ".svg"):
        raise ActAlignError(f"Plots are saved as .png or .svg, not {Path(args.out).suffix or 'no suffix'}.")
    _check_writable(args.out)
    _check_video(args.video)
    if args.answer is not None and args.answer not in candidates:
        raise ActAlignError(f"--answer {args.answer!r} is not one of the candidates.")
    scripts = _script_source(args)
    scripts.get(args.domain, candidates)
    model = _pipeline(args, scripts)
    pred = model.classify(args.video, candidates, args.domain, args.start, args.end)
    from actalign.viz import plot_prediction

    print(plot_prediction(pred, args.out, answer=args.answer))
    return 0


def cmd_scripts(args) -> int:
    from actalign.scripts import ScriptStore
    from actalign.scripts.parse import norm
    from actalign.scripts.store import read_scripts_file, stats

    command = args.scripts_command
    if command == "generate":
        jobs: dict[str, list[str]] = {}
        if args.manifest:
            from actalign.eval.datasets import load_manifest

            for clip in load_manifest(args.manifest):
                jobs.setdefault(clip.domain, [])
                jobs[clip.domain] += [c for c in clip.candidates if c not in jobs[clip.domain]]
        if args.candidates:
            if not args.domain:
                raise ActAlignError("Give --domain with --candidates.")
            jobs.setdefault(args.domain, []).extend(args.candidates)
        if not jobs:
            raise ActAlignError(
                "Nothing to generate: pass --domain D --candidates A B C, or --manifest FILE."
            )
        source = _script_source(args, need_writer=True)
        for domain, actions in jobs.items():
            for action, steps in source.get(domain, actions).items():
                print(f"[{domain}] {action}")
                for i, s in enumerate(steps, 1):
                    print(f"  {i}. {s}")
        return 0
    store = ScriptStore(args.store)
    if command == "show":
        for s in store.all():
            if args.domain and norm(args.domain) != norm(s.domain):
                continue
            origin = "hand-written" if s.kind == "hand" else f"{s.strategy}, {s.model}, T={s.temperature}"
            print(f"[{s.domain}] {s.action}  ({origin})")
            for i, step in enumerate(s.steps, 1):
                print(f"  {i}. {step}")
        return 0
    if command == "export":
        _check_writable(args.file)
        print(f"exported {store.export(args.file)} scripts to {args.file}")
        return 0
    if command == "import":
        print(f"imported {store.import_file(args.file)} scripts from {args.file}")
        return 0
    data = read_scripts_file(args.scripts) if args.scripts else store.effective()
    rows = stats(data)
    if not rows:
        raise ActAlignError("No scripts to summarise; generate or import some first.")
    print(f"{'domain':<24} {'actions':>7}  {'steps / action':>16}  {'words / step':>14}")
    for r in rows:
        print(
            f"{r['domain']:<24} {r['actions']:>7}  {r['steps_mean']:8.2f} ± {r['steps_std']:<5.2f}"
            f"  {r['words_mean']:7.2f} ± {r['words_std']:<5.2f}"
        )
    return 0


def cmd_models(args) -> int:
    from actalign.encoders import MODELS

    for short, hub in MODELS.items():
        print(f"{short:<16} {hub}")
    return 0


COMMANDS = {"classify": cmd_classify, "plot": cmd_plot, "scripts": cmd_scripts, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "eval":
            from actalign.eval.cli import cmd_eval

            return cmd_eval(args)
        return COMMANDS[args.command](args)
    except ActAlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
