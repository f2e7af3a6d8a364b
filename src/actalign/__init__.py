"""actalign: zero-shot fine-grained video classification by language-guided sequence alignment.

    from actalign import ActAlign
    aa = ActAlign(model="siglip-base", fps=4)      # any `Config` field; or ActAlign(Config(...))
    pred = aa.classify("clip.mp4", ["Tip-in", "Putback dunk"], domain="basketball")

Heavy pieces (torch, PyAV, transformers) load lazily: `import actalign` stays cheap, and
`actalign.align` never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actalign.errors import ActAlignError

__version__ = "0.1.0"
__all__ = [
    "ActAlign",
    "ActAlignError",
    "Config",
    "Detection",
    "Encoder",
    "Failure",
    "Hit",
    "Index",
    "Prediction",
    "__version__",
    "load_encoder",
    "register_backend",
]

if TYPE_CHECKING:
    from actalign.api import ActAlign, Failure
    from actalign.config import Config
    from actalign.encoders import load_encoder, register_backend
    from actalign.encoders.base import Encoder
    from actalign.index import Hit, Index
    from actalign.locate import Detection
    from actalign.score import Prediction

_HOMES = {
    "ActAlign": "actalign.api",
    "Failure": "actalign.api",
    "Config": "actalign.config",
    "Detection": "actalign.locate",
    "Encoder": "actalign.encoders.base",
    "Hit": "actalign.index",
    "Index": "actalign.index",
    "Prediction": "actalign.score",
    "load_encoder": "actalign.encoders",
    "register_backend": "actalign.encoders",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'actalign' has no attribute {name!r}")
