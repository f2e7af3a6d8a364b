"""actalign: zero-shot fine-grained video classification by language-guided sequence alignment.

Heavy pieces (torch, PyAV, transformers) load lazily: `import actalign` stays cheap, and
`actalign.align` never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actalign.errors import ActAlignError

__version__ = "0.1.0"
__all__ = ["ActAlign", "ActAlignError", "Prediction", "__version__", "load_encoder"]

if TYPE_CHECKING:
    from actalign.classify import ActAlign, Prediction
    from actalign.encoders import load_encoder


def __getattr__(name: str) -> Any:
    if name in ("ActAlign", "Prediction"):
        from actalign import classify

        return getattr(classify, name)
    if name == "load_encoder":
        from actalign.encoders import load_encoder

        return load_encoder
    raise AttributeError(f"module 'actalign' has no attribute {name!r}")
