"""`actalign scripts generate|show|export|import|stats`: the sub-action scripts."""

from __future__ import annotations

import sys

from actalign.cli import common
from actalign.errors import ActAlignError
from actalign.text import plural, printable

DEFAULT_STRATEGY = "context-rich"  # scripts.prompts.DEFAULT_STRATEGY, without importing the package
STORE_HELP = "script store (default: $ACTALIGN_HOME/scripts.sqlite, else the user data folder)"


def _store(p) -> None:
    p.add_argument("--store", default=None, metavar="PATH", help=STORE_HELP)


def _strategy(p, what: str) -> None:
    p.add_argument(
        "--strategy",
        choices=common.STRATEGY_NAMES,
        default=DEFAULT_STRATEGY,
        help=f"prompt strategy {what} (default: {DEFAULT_STRATEGY})",
    )


def add_parser(sub) -> None:
    p = sub.add_parser(
        "scripts",
        help="generate, show, export, import scripts; statistics",
        description="Sub-action scripts: each candidate action as an ordered list of visible steps. "
        "Generated scripts are kept in a store per prompt strategy; hand-written ones can be "
        "imported for a strategy, and then win over its generated ones.",
    )
    ssub = p.add_subparsers(dest="scripts_command", required=True)
    g = ssub.add_parser(
        "generate",
        help="write scripts with the LLM and store them",
        description="Write the scripts that are missing with an LLM (--llm, or OPENAI_API_KEY / "
        "OPENAI_BASE_URL), store them, and print them. Scripts already stored for the strategy "
        "and model are not generated again.",
    )
    g.add_argument(
        "--domain",
        type=common.domain_name,
        default=None,
        help="sport or domain of --candidates (default: none)",
    )
    g.add_argument(
        "--candidates", nargs="+", default=[], metavar="ACTION", help="actions to script (default: none)"
    )
    g.add_argument(
        "--manifest",
        default=None,
        metavar="MANIFEST",
        help="JSONL manifest: scripts for every row's candidates (default: none)",
    )
    common.add_script_options(g)
    s = ssub.add_parser(
        "show",
        help="print stored scripts",
        description="Print the stored scripts of one prompt strategy: the generated ones (with "
        "their model and temperature) and the hand-written ones.",
    )
    s.add_argument("--domain", default=None, help="only this domain (default: every domain)")
    _store(s)
    _strategy(s, "whose scripts to show")
    e = ssub.add_parser(
        "export",
        help="write the store's scripts to a JSON file",
        description="Write the scripts one prompt strategy uses (hand-written first, else the newest "
        'generated) to a JSON file: {"domain": {"action": ["step", ...]}}. Edit it and import it '
        "again with the same --strategy.",
    )
    e.add_argument("file", metavar="FILE", help="JSON file to write")
    _store(e)
    _strategy(e, "whose scripts to export")
    i = ssub.add_parser(
        "import",
        help="import a scripts JSON (ours or the authors' format)",
        description="Import a scripts JSON (ours, or the authors' generated_subactions.json) as "
        "hand-written scripts of one prompt strategy; they win over that strategy's generated "
        "scripts and leave the other strategies as they are.",
    )
    i.add_argument("file", metavar="FILE", help="scripts JSON to import")
    _store(i)
    _strategy(i, "the imported scripts are for")
    t = ssub.add_parser(
        "stats",
        help="steps per action and words per step (paper Table 1)",
        description="Steps per action and words per step, per domain and overall (the paper's "
        "Table 1), of the scripts one prompt strategy uses, or of a scripts file.",
    )
    _store(t)
    _strategy(t, "whose scripts to summarise")
    t.add_argument(
        "--scripts", default=None, metavar="FILE", help="a scripts file instead of the store (default: none)"
    )


def _jobs(args) -> dict[str, list[str]]:
    from actalign.scripts.parse import unique_names

    jobs: dict[str, list[str]] = {}
    if args.manifest:
        from actalign.runner.plan import load_manifest

        for clip in load_manifest(args.manifest).clips:
            jobs.setdefault(clip.domain, []).extend(clip.candidates)
    if args.candidates:
        if not args.domain:
            raise ActAlignError("Give --domain with --candidates.")
        jobs.setdefault(args.domain, []).extend(args.candidates)
    if not jobs:
        raise ActAlignError("Nothing to generate: pass --domain D --candidates A B C, or --manifest FILE.")
    return {d: unique_names(a) for d, a in jobs.items()}


def generate(args) -> int:
    from actalign.scripts import ScriptSource, ScriptStore, make_writer

    jobs = _jobs(args)
    writer = make_writer(args.llm, args.llm_model, args.llm_base_url)
    if writer is None:
        raise ActAlignError(
            "Generating scripts needs an LLM: pass --llm local:MODEL_ID_OR_DIR to run one in-process, "
            "--llm http://HOST:PORT/v1 for an OpenAI-compatible server (vLLM, Ollama, llama.cpp), or "
            "set OPENAI_API_KEY for OpenAI; to use scripts you wrote, `actalign scripts import FILE`."
        )
    source = ScriptSource(args.scripts, ScriptStore(args.store), writer, args.strategy)
    for domain, actions in jobs.items():
        for action, steps in source.get(domain, actions).items():
            print(f"[{printable(domain)}] {printable(action)}")
            for n, step in enumerate(steps, 1):
                print(f"  {n}. {printable(step)}")
    return 0


def show(store, domain: str | None, strategy: str = DEFAULT_STRATEGY) -> int:
    from actalign.scripts.parse import norm

    if not store.path.exists():
        print(f"No script store at {store.path} yet; generate or import scripts first.", file=sys.stderr)
        return 0
    shown = 0
    scripts = store.scripts(strategy)
    for s in scripts:
        if domain and norm(domain) != norm(s.domain):
            continue
        if s.kind == "hand":
            origin = "hand-written" if s.strategy else "hand-written, every strategy"
        else:
            origin = f"{s.strategy}, {s.model}, T={s.temperature}"
        print(f"[{printable(s.domain)}] {printable(s.action)}  ({printable(origin)})")
        for n, step in enumerate(s.steps, 1):
            print(f"  {n}. {printable(step)}")
        shown += 1
    if not shown:
        print(_nothing_shown(store, scripts, domain, strategy), file=sys.stderr)
    return 0


def _nothing_shown(store, scripts, domain: str | None, strategy: str) -> str:
    """Why `show` printed nothing, with what is there instead."""
    import difflib

    from actalign.scripts.parse import norm

    which = f" for {printable(repr(domain))}" if domain else ""
    where = f"No stored {strategy} scripts{which} in {store.path}."
    domains = sorted({s.domain for s in scripts})
    close = difflib.get_close_matches(domain or "", domains, n=1, cutoff=0.7)
    if close:
        return f"{where} Did you mean {printable(repr(close[0]))}?"
    others = sorted(
        {
            s.strategy
            for s in store.scripts(None)
            if s.strategy and s.strategy != strategy and (not domain or norm(domain) == norm(s.domain))
        }
    )
    if others:
        flags = ", ".join(f"--strategy {o}" for o in others)
        return f"{where} There are scripts for other strategies: {flags}."
    if domains:
        return f"{where} Stored: {printable(', '.join(domains))}."
    return where


def stats_table(data) -> int:
    from actalign.scripts.store import stats

    rows = stats(data)
    if not rows:  # as `scripts show`: an empty store is a state, not an error
        print("No scripts to summarise; generate or import some first.", file=sys.stderr)
        return 0
    print(f"{'domain':<24} {'actions':>7}  {'steps / action':>16}  {'words / step':>14}")
    for r in rows:
        print(
            f"{printable(r['domain']):<24} {r['actions']:>7}  {r['steps_mean']:8.2f} ± {r['steps_std']:<5.2f}"
            f"  {r['words_mean']:7.2f} ± {r['words_std']:<5.2f}"
        )
    return 0


def run(args) -> int:
    from actalign.scripts import ScriptStore
    from actalign.scripts.store import read_scripts_file

    command = args.scripts_command
    if command == "generate":
        return generate(args)
    if command == "stats" and args.scripts:
        return stats_table(read_scripts_file(args.scripts))
    store = ScriptStore(args.store)
    if command == "show":
        return show(store, args.domain, args.strategy)
    if command == "export":
        common.check_writable(args.file)
        count = store.export(args.file, args.strategy)
        print(f"exported {plural(count, args.strategy + ' script')} to {args.file}")
        return 0
    if command == "import":
        count = store.import_file(args.file, args.strategy)
        print(f"imported {plural(count, 'script')} from {args.file} as hand-written {args.strategy} scripts")
        return 0
    return stats_table(store.effective(args.strategy))
