"""Runs `actalign classify` in-process on each mutated video named on stdin (one JSON line per
case) and answers one JSON line per case on stdout:

    {"case": ..., "outcome": "ok" | "error" | "traceback", "frames": N, "warned": bool, "detail": ...}

The parent (tests/test_hostile.py) watches for crashes and hangs: a case that takes too long, or a
worker that dies, is charged to that case and a new worker takes the next ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run_case(case: dict, base_args: list[str]) -> dict:
    from actalign.cli import main

    out, err = io.StringIO(), io.StringIO()
    result = {"case": case["name"], "frames": None, "warned": False, "detail": ""}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["classify", case["path"], *base_args])
    except BaseException:  # anything escaping main is a traceback the user would see
        result.update(outcome="traceback", detail=traceback.format_exc()[-800:])
        return result
    text = err.getvalue()
    result["warned"] = "warning:" in text
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith(("warning:", "[actalign]"))]
    if code == 0:
        videos = json.loads(out.getvalue())["videos"]
        result.update(outcome="ok", frames=videos[0]["frames"])
    elif code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        result.update(outcome="error", detail=lines[0][:300])
    else:
        result.update(outcome="traceback", detail=f"exit {code}: {text[-800:]}")
    return result


def main() -> None:
    base_args = json.loads(sys.argv[1])
    for line in sys.stdin:
        case = json.loads(line)
        print(json.dumps(run_case(case, base_args)), flush=True)


if __name__ == "__main__":
    main()
