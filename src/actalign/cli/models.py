"""`actalign models`: the short model names, what each is, and whether it is on disk already."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser(
        "models",
        help="list the short model names: backend, parameters, embedding width, on disk or not",
        description="The short names --model takes: the hub checkpoint each stands for, its backend, "
        "parameters and embedding width, and whether it is in the local Hugging Face cache already "
        "(checked offline; a model not on disk is downloaded once on first use). --model also takes "
        "any hub id of a SigLIP, SigLIP 2 or CLIP checkpoint, a local folder saved with "
        "save_pretrained, or BACKEND:NAME for an encoder registered with actalign.register_backend.",
    )


def run(args) -> int:
    from actalign.encoders import MODEL_INFO, MODELS, backends, on_disk
    from actalign.text import human_count

    rows = [("name", "checkpoint", "backend", "parameters", "width", "on disk")]
    for short, hub in MODELS.items():
        info = MODEL_INFO.get(short)
        rows.append(
            (
                short,
                hub,
                info.backend if info else "transformers",
                human_count(info.parameters) if info else "?",
                str(info.dim) if info else "?",
                "yes" if on_disk(hub) else "no (downloaded on first use)",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    others = [b for b in backends() if b != "hf"]
    if others:
        print(f"registered backends: {', '.join(others)} (--model BACKEND:NAME)")
    return 0
