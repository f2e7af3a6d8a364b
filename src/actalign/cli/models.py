"""`actalign models`: the short model names and the checkpoints they stand for."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser(
        "models",
        help="list the short model names",
        description="The short names --model takes, and the hub checkpoints they stand for. --model "
        "also takes any hub id of a SigLIP, SigLIP 2 or CLIP checkpoint, or a local folder saved with "
        "save_pretrained.",
    )


def run(args) -> int:
    from actalign.encoders import MODELS

    for short, hub in MODELS.items():
        print(f"{short:<16} {hub}")
    return 0
