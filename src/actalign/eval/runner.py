"""The evaluation runner: every method from one decode and one encode per clip, resumable.

Outputs in the run folder:
- config.json        the exact configuration, model identity and package versions
- predictions.jsonl  one line per finished clip: per method its scores and the answer's rank
- failed.jsonl       clips that could not be read, with the reason
- summary.json / summary.md   top-1/2/3 per method (and the expected random baseline)

An interrupted run started again with the same configuration skips the clips already in
predictions.jsonl; a different configuration in the same folder is refused.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from actalign.classify import DEFAULT_TEMPLATE, ActAlign
from actalign.encoders import Encoder
from actalign.encoders.cache import EmbeddingCache, atomic_write_bytes
from actalign.errors import ActAlignError
from actalign.eval.datasets import Clip
from actalign.eval.metrics import random_topk, rank_of_answer, topk
from actalign.scripts import ScriptSource

KS = (1, 2, 3)


@dataclass(frozen=True)
class Rung:
    """One method: the baseline, or ActAlign with a template, smoothing and script strategy."""

    name: str
    method: str = "actalign"  # or "mean-pool"
    template: str = DEFAULT_TEMPLATE
    smooth_seconds: float = 1.0
    strategy: str = "context-rich"


def ladder(strategy: str = "context-rich") -> list[Rung]:
    """Table 3 of the paper: each rung adds one component."""
    return [
        Rung("mean-pool", method="mean-pool"),
        Rung("+ DTW (bare steps)", template="{step}", smooth_seconds=0.0, strategy=strategy),
        Rung("+ context", template=DEFAULT_TEMPLATE, smooth_seconds=0.0, strategy=strategy),
        Rung("+ smoothing (ActAlign)", template=DEFAULT_TEMPLATE, smooth_seconds=1.0, strategy=strategy),
    ]


@dataclass
class EvalConfig:
    manifest: str
    rungs: list[Rung]
    fps: float | None = None
    model: str = ""
    scripts: list[str] = field(default_factory=list)
    limit: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rungs"] = [asdict(r) for r in self.rungs]
        return d


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("actalign", "numpy", "torch", "transformers", "av"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _read_done(path: Path) -> dict[str, dict]:
    """Finished clips from predictions.jsonl; a torn last line (a crash mid-write) is dropped."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    good = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[row["id"]] = row
        good.append(line)
    atomic_write_bytes(path, "".join(g + "\n" for g in good).encode())
    return done


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def evaluate(
    clips: Sequence[Clip],
    encoder: Encoder,
    sources: dict[str, ScriptSource],
    out_dir: str | os.PathLike,
    config: EvalConfig,
    cache: EmbeddingCache | None = None,
    progress: Callable[[Clip, bool], None] | None = None,
) -> dict:
    """Run every rung on every clip (skipping finished ones) and write the summary.

    sources: a ScriptSource per script strategy named by the rungs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {**config.to_dict(), "encoder": encoder.identity, "scale": encoder.scale, "bias": encoder.bias}
    config_path = out / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous.get("run") != record:
            raise ActAlignError(
                f"{out} holds a run with another configuration; use a new --out folder (or delete it)."
            )
    else:
        payload = {"run": record, "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_bytes(config_path, (json.dumps(payload, indent=2) + "\n").encode())
    predictions = out / "predictions.jsonl"
    done = _read_done(predictions)
    (out / "failed.jsonl").unlink(missing_ok=True)  # failures are retried on every run
    pipelines = _pipelines(encoder, config.rungs, config.fps, cache)
    for clip in clips[: config.limit]:
        if clip.id in done:
            if progress:
                progress(clip, True)
            continue
        try:
            row = _evaluate_clip(clip, pipelines, sources, config.rungs)
        except ActAlignError as e:
            _append(out / "failed.jsonl", {"id": clip.id, "video": str(clip.video), "reason": str(e)})
            continue
        _append(predictions, row)
        done[clip.id] = row
        if progress:
            progress(clip, False)
    wanted = {c.id for c in clips[: config.limit]}
    summary = summarise([r for i, r in done.items() if i in wanted], config.rungs, len(wanted))
    summary["config"] = record
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "summary.md", summary_markdown(summary).encode())
    return summary


def _pipelines(encoder: Encoder, rungs: Sequence[Rung], fps, cache) -> list[ActAlign]:
    return [
        ActAlign(
            encoder,
            fps=fps,
            smooth_seconds=r.smooth_seconds,
            template=r.template,
            method=r.method,
            cache=cache if cache is not None else False,
        )
        for r in rungs
    ]


def _evaluate_clip(clip: Clip, pipelines: list[ActAlign], sources, rungs: Sequence[Rung]) -> dict:
    emb = pipelines[0].embed(clip.video, clip.start, clip.end)  # decoded and encoded once for all rungs
    methods = {}
    candidates = list(clip.candidates)
    for rung, pipe in zip(rungs, pipelines):
        if rung.method == "mean-pool":
            pred = pipe.classify_mean_pool(str(clip.video), emb, candidates, clip.domain)
        else:
            scripts = sources[rung.strategy].get(clip.domain, candidates)
            pred = pipe.classify_embedding(str(clip.video), emb, scripts, clip.domain)
        by_action = {c.action: c.score for c in pred.candidates}
        scores = [by_action[a] for a in candidates]
        methods[rung.name] = {"scores": scores, "rank": rank_of_answer(scores, clip.answer)}
    return {
        "id": clip.id,
        "video": str(clip.video),
        "domain": clip.domain,
        "candidates": candidates,
        "answer": clip.answer,
        "frames": len(emb.timestamps),
        "methods": methods,
    }


def summarise(rows: list[dict], rungs: Sequence[Rung], total: int) -> dict:
    table = {
        "random (expected)": {f"top{k}": random_topk([len(r["candidates"]) for r in rows], k) for k in KS}
    }
    for rung in rungs:
        ranks = [r["methods"][rung.name]["rank"] for r in rows]
        table[rung.name] = {f"top{k}": topk(ranks, k) for k in KS}
    return {"clips": len(rows), "clips_in_manifest": total, "methods": table}


def summary_markdown(summary: dict) -> str:
    lines = [
        f"Evaluated {summary['clips']} of {summary['clips_in_manifest']} clips "
        f"(model {summary.get('config', {}).get('encoder', '?')}).",
        "",
        "| method | top-1 (%) | top-2 (%) | top-3 (%) |",
        "|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[f'top{k}']:.2f}" for k in KS) + " |")
    return "\n".join(lines) + "\n"
