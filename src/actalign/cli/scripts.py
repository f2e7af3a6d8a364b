"""`actalign scripts generate|show|export|import|stats`: the sub-action scripts."""

from __future__ import annotations

from actalign.cli import common
from actalign.errors import ActAlignError


def add_parser(sub) -> None:
    p = sub.add_parser("scripts", help="generate, show, export, import scripts; statistics")
    ssub = p.add_subparsers(dest="scripts_command", required=True)
    g = ssub.add_parser("generate", help="write scripts with the LLM and store them")
    g.add_argument("--domain", default=None)
    g.add_argument("--candidates", nargs="+", default=[], metavar="ACTION")
    g.add_argument("--manifest", default=None, help="JSONL manifest: scripts for every row's candidates")
    common.add_script_options(g)
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


def _jobs(args) -> dict[str, list[str]]:
    from actalign.scripts.parse import unique_names

    jobs: dict[str, list[str]] = {}
    if args.manifest:
        from actalign.eval.datasets import load_manifest

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
    jobs = _jobs(args)
    source = common.script_source(args, need_writer=True)
    for domain, actions in jobs.items():
        for action, steps in source.get(domain, actions).items():
            print(f"[{domain}] {action}")
            for i, s in enumerate(steps, 1):
                print(f"  {i}. {s}")
    return 0


def show(store, domain: str | None) -> int:
    import sys

    from actalign.scripts.parse import norm

    if not store.path.exists():
        print(f"No script store at {store.path} yet; generate or import scripts first.", file=sys.stderr)
        return 0
    shown = 0
    scripts = store.all()
    for s in scripts:
        if domain and norm(domain) != norm(s.domain):
            continue
        origin = "hand-written" if s.kind == "hand" else f"{s.strategy}, {s.model}, T={s.temperature}"
        print(f"[{s.domain}] {s.action}  ({origin})")
        for i, step in enumerate(s.steps, 1):
            print(f"  {i}. {step}")
        shown += 1
    if not shown:
        import difflib

        domains = sorted({s.domain for s in scripts})
        close = difflib.get_close_matches(domain or "", domains, n=1, cutoff=0.7)
        hint = (
            f" Did you mean {close[0]!r}?"
            if close
            else (f" Stored: {', '.join(domains)}." if domains else "")
        )
        print(
            f"No stored scripts{f' for {domain!r}' if domain else ''} in {store.path}.{hint}", file=sys.stderr
        )
    return 0


def stats_table(data) -> int:
    from actalign.scripts.store import stats

    rows = stats(data)
    if not rows:  # as `scripts show`: an empty store is a state, not an error
        import sys

        print("No scripts to summarise; generate or import some first.", file=sys.stderr)
        return 0
    print(f"{'domain':<24} {'actions':>7}  {'steps / action':>16}  {'words / step':>14}")
    for r in rows:
        print(
            f"{r['domain']:<24} {r['actions']:>7}  {r['steps_mean']:8.2f} ± {r['steps_std']:<5.2f}"
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
        return show(store, args.domain)
    if command == "export":
        common.check_writable(args.file)
        print(f"exported {store.export(args.file)} scripts to {args.file}")
        return 0
    if command == "import":
        print(f"imported {store.import_file(args.file)} scripts from {args.file}")
        return 0
    return stats_table(store.effective())
