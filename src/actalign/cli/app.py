"""`actalign app`: serve the web page (Gradio) and its API on localhost.

Needs the optional extra: pip install 'actalign[app]'. Listens on 127.0.0.1 unless --host says
otherwise; a public gradio.live link is made only with --share.
"""

from __future__ import annotations

import argparse
import time
import warnings

from actalign.cli import common
from actalign.errors import ActAlignError


def port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    value = common.positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1 to 65535)")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "app",
        help="a web page (and API) to try actalign on a video",
        description="Serve a page to classify a sample or an uploaded video, edit the scripts, and "
        "see the ranking, the step timeline and the heatmaps; /classify is the same run as an API. "
        "With --index, a Search tab (and /search) finds actions across an indexed archive.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on: 127.0.0.1 or ::1 for this machine only, 0.0.0.0 or :: for every "
        "network interface (other machines can then use the page)",
    )
    p.add_argument("--port", type=port, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    p.add_argument(
        "--max-upload-mb", type=common.positive_float, default=500.0, help="largest upload accepted, in MB"
    )
    p.add_argument(
        "--samples",
        default=None,
        metavar="MANIFEST",
        help="a JSONL manifest whose clips the page offers (default: none, uploads only)",
    )
    p.add_argument(
        "--index",
        default=None,
        metavar="INDEX",
        help="an archive index (actalign index build) to search: adds a Search tab, whose hits play "
        "from their start, and the /search API (the JSON of actalign search --format json); only "
        "the files the index names are served (default: none, no Search tab)",
    )
    common.add_sampling_options(p, start_end=False)
    common.add_method_options(p)
    common.add_model_options(p)
    common.add_script_options(p)
    common.add_quiet(p)


def settings(args):
    """AppSettings from the command line: the CLI's one Settings plus the page's fields."""
    from actalign.app import AppSettings

    return AppSettings.from_args(args)


def banner(where, host: str, port: int, share_url: str | None = None) -> list[str]:
    """The lines that say where the page is, and plainly whether other machines can reach it."""
    urls = f"http://{where.local}:{port}/"
    if where.everywhere:
        urls += f" (this machine) and http://{where.remote}:{port}/ (other machines)"
    lines = [f"actalign app on {urls}" + (f" and {share_url}" if share_url else "")]
    if where.everywhere:
        lines.append(
            f"Other machines can reach this page: it listens on every network interface (--host {host}); "
            "--host 127.0.0.1 keeps it to this machine."
        )
    elif where.remote:
        lines.append(
            f"Other machines can reach this page: it listens on {host}, an address of this machine on "
            "a network; --host 127.0.0.1 keeps it to this machine."
        )
    if share_url:
        lines.append(f"Anyone with the public link can use this page ({share_url}).")
    return lines


def run(args) -> int:
    from actalign.app import INSTALL_HINT, launch, listen_on, load_samples, stop

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ActAlignError(INSTALL_HINT) from None

    listen_on(args.host)  # neither an address nor a name: one sentence before anything loads
    common.front(args).scripts()  # unreadable scripts files or store: one sentence now, not per request
    if args.samples:
        load_samples(args.samples)
    for noise in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=noise)  # the web stack's, not the user's to fix
    demo = launch(settings(args), host=args.host, port=args.port, share=args.share)
    for line in banner(listen_on(args.host), args.host, args.port, demo.share_url):
        print(line)
    print("Ctrl-C stops it.", flush=True)
    # not Gradio's block_thread: it swallows Ctrl-C (and prints its own line); here Ctrl-C and
    # SIGTERM reach the CLI, which ends the app as every command ends: `interrupted`, exit 130;
    # `terminated`, 143
    try:
        while demo.is_running:
            time.sleep(0.2)
    finally:
        stop(demo)
    return 0
