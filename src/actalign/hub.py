"""The one home of loading a checkpoint from a folder or a hub id, for every model actalign loads
(the encoders, the X-CLIP and video-LLM baselines, the in-process LLM writer).

A hub id is looked up in the local cache first and goes to the network only when it is not there
(an unreachable hub is one clear error within seconds, not minutes of retries); a folder is
identified by a hash of its files, a hub id by its commit. transformers' chatter (backend
fallbacks, unused weights) is not the user's concern; the hub's download bars stay.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from actalign.errors import ActAlignError

__all__ = [
    "check_hub_reachable",
    "checkpoint_hash",
    "first_line",
    "hub_commit",
    "hub_validation_error",
    "load_checkpoint",
    "quiet_transformers",
]

T = TypeVar("T")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def checkpoint_hash(directory: Path) -> str:
    """Identity of a local checkpoint: the full bytes of its small files (configs, tokenizer) and,
    for weight files, their size plus the first and last MiB (hashing gigabytes on every run
    would cost seconds)."""
    h = hashlib.blake2b(digest_size=12)
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(directory)).encode())
        size = f.stat().st_size
        h.update(size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            if f.suffix in _WEIGHT_SUFFIXES and size > 2 << 20:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
            else:
                h.update(fh.read())
    return h.hexdigest()


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    text = str(e).strip().splitlines()
    return text[0].rstrip(".")[:200] if text else type(e).__name__


@contextmanager
def quiet_transformers():
    """transformers' logging at errors only and its weight-loading bar off, inside the block."""
    from transformers.utils import logging as hf_logging

    from actalign.progress import quiet_hub

    quiet_hub()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def hub_validation_error() -> type[Exception]:
    """The hub's error for a string that is neither a directory nor a valid model id."""
    try:
        from huggingface_hub.errors import HFValidationError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import HFValidationError
    return HFValidationError


class _NotCached(Exception):
    pass


def load_checkpoint(
    name: str, load: Callable[[str, bool], T], what: str = "model", quiet: Callable | None = None
) -> tuple[T, str]:
    """(load(where, local_files_only), source identity) for a folder or a hub id.

    `load` raises OSError / ValueError / KeyError when the files are not there (or not loadable);
    `what` names the model in errors ("model", "X-CLIP model", "VLM"); `quiet` is the context
    around each attempt (default `quiet_transformers`; a loader without transformers gives its
    own, so as not to import it)."""
    name = str(name).strip()
    path = Path(name).expanduser()
    if path.is_dir():
        return _attempt(load, str(path), False, name, what, quiet=quiet), f"dir:{checkpoint_hash(path)}"
    if not name or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ActAlignError(
            f"No {what} directory at {path}; give a folder saved with save_pretrained or a hub id."
        )
    try:
        loaded = _attempt(load, name, True, name, what, quiet=quiet)
    except _NotCached:
        check_hub_reachable(name, what)
        loaded = _attempt(load, name, False, name, what, bars=True, quiet=quiet)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    return loaded, f"hf:{name}@{hub_commit(name, model)}"


def _show_download_bars() -> None:
    """The hub's download bars on (unless quiet): a first download takes minutes."""
    from actalign.progress import is_quiet

    if not is_quiet():
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()


def _attempt(load, where: str, local_files_only: bool, name: str, what: str, bars: bool = False, quiet=None):
    with (quiet or quiet_transformers)():
        if bars:
            _show_download_bars()
        try:
            return load(where, local_files_only)
        except (OSError, ValueError, KeyError, hub_validation_error()) as e:
            if local_files_only:
                raise _NotCached() from None
            raise ActAlignError(
                f"Could not load {what} {name!r}: {first_line(e)}. Check the id or path; a hub id "
                "needs the internet once (then it is cached), or pass a folder saved with save_pretrained."
            ) from None


def hub_commit(name: str, model) -> str:
    """The commit of the cached snapshot a hub id was loaded from (cache keys follow it)."""
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return commit
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:
        found = None
    return Path(found).parent.name if isinstance(found, str) else "unknown"


def check_hub_reachable(name: str, what: str = "model", timeout: float = 3.0) -> None:
    """One quick connection to the hub's host; fails in seconds instead of minutes of retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ActAlignError(
            f"Could not load {what} {name!r}: it is not in the local cache and HF_HUB_OFFLINE is set. "
            "Download it once with the internet, or pass a local directory saved with save_pretrained."
        )
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise ActAlignError(
            f"Could not load {what} {name!r}: it is not in the local cache and {url.hostname} cannot be "
            f"reached ({e.strerror or e}). Connect to the internet once (then it is cached), or pass "
            "a local directory saved with save_pretrained."
        ) from None
