"""`Config`: every choice a run makes, built once, as data.

    cfg = Config(model="siglip-base", fps=4)              # or Config.from_args(args) in the CLI
    cfg = cfg.replace(alignment="subsequence")            # a copy with some fields changed
    cfg.record()                                          # the settings block of every result

Field names are the command line's option names (`--cache-dir` -> `cache_dir`). The values are
checked when the Config is made, so a bad choice is one sentence before any model loads. A Config
also makes what its fields name (the encoder, the embedding cache, the script source with its LLM
writer, made once and shared by copies); `actalign.ActAlign` holds one and calls these.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, fields, replace

from actalign.encoders import DEFAULT_MODEL
from actalign.errors import ActAlignError
from actalign.score import ALIGNMENTS, DEFAULT_TEMPLATE, MAX_SMOOTH, MEAN_POOL_TEMPLATE, METHODS, Method

__all__ = ["ENGINES", "Config"]

ENGINES = ("local", "ray")
BASELINES = ("xclip", "vlm")  # the paper's Table 2 peers (`actalign.baselines`): `model` names X-CLIP
STRATEGIES = ("context-rich", "context-rich-t1", "short-fixed")  # scripts.prompts.STRATEGIES


@dataclass(frozen=True)
class Config:
    """What a run is made of. `None` means the documented default.

    model: short name (`actalign models`), hub id or local directory.
    device: cpu, cuda, cuda:N or mps (None: the best there is); dtype: float32, float16, bfloat16
    or int8 (None: chosen for the device and CPU). cache_dir: the embedding cache (None: the user
    cache folder); no_cache: neither read nor write it. scripts: hand-written scripts files, which
    win over the store; store: the script store (None: $ACTALIGN_HOME/scripts.sqlite); llm: the
    writer of missing scripts (local:ID_OR_DIR, an endpoint, or openai; None: $ACTALIGN_LLM, else
    the OpenAI settings when set). fps: frames sampled per second (None: every frame); start/end:
    seconds of each video; smooth: the Eq. 7 window in seconds. engine/workers: where a batch
    runs (local processes or Ray) and its decode workers (None: one per core); for a local
    search, the threads that scan an index's shards (None: one per core).
    """

    # model
    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    text_encoding: str = "trained"
    compile: bool = False
    cache_dir: str | None = None
    no_cache: bool = False
    # scripts
    scripts: tuple[str, ...] = ()
    store: str | None = None
    strategy: str = "context-rich"
    llm: str | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    # sampling and method
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    method: str = "actalign"
    smooth: float = 1.0
    template: str = DEFAULT_TEMPLATE
    mean_pool_template: str = MEAN_POOL_TEMPLATE
    alignment: str = "global"
    # batch runs
    engine: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    _made: dict = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.scripts, (str, bytes)) or not isinstance(self.scripts, tuple):
            object.__setattr__(self, "scripts", _paths(self.scripts))
        if self.model is None:
            object.__setattr__(self, "model", DEFAULT_MODEL)
        _check_choice("method", self.method, (*METHODS, *BASELINES))
        _check_choice("alignment", self.alignment, ALIGNMENTS)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("text_encoding", self.text_encoding, ("trained", "authors"))
        if self.fps is not None and not (_number(self.fps) and 0 < self.fps <= 10_000):
            raise ActAlignError(f"fps must be a number above 0 and at most 10000, got {self.fps!r}.")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not (_number(value) and value >= 0):
                raise ActAlignError(f"{name} must be 0 or more seconds, got {value!r}.")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ActAlignError(f"end ({self.end}) must be after start ({self.start}).")
        for name in ("fps", "start", "end", "smooth"):  # 5 and 5.0 are one setting (and one record)
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if not (_number(self.smooth) and 0 <= self.smooth <= MAX_SMOOTH):
            raise ActAlignError(
                f"`smooth` must be 0 to {MAX_SMOOTH:g} seconds (0: none), got {self.smooth!r}."
            )
        for name in ("batch_size", "workers"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ActAlignError(f"{name} must be a whole number of at least 1, got {value!r}.")
        from actalign.score import check_template

        check_template(self.template, "{step}")
        check_template(self.mean_pool_template, "{action}")

    @classmethod
    def from_args(cls, args) -> Config:
        """The Config of a parsed command line (options a command lacks keep their defaults)."""
        names = {f.name for f in fields(cls) if not f.name.startswith("_")}
        values = {n: getattr(args, n) for n in names if hasattr(args, n)}
        if values.get("model") is None:
            values.pop("model", None)
        values["scripts"] = tuple(values.get("scripts") or ())
        return cls(**values)

    def replace(self, **changes) -> Config:
        """A copy with some fields changed; what was made for this Config (the LLM writer) is
        shared when the fields it depends on are the same."""
        unknown = sorted(set(changes) - {f.name for f in fields(self) if not f.name.startswith("_")})
        if unknown:
            raise ActAlignError(f"Config has no field {unknown[0]!r}.")
        same = all(changes.get(k, getattr(self, k)) == getattr(self, k) for k in _WRITER_FIELDS)
        shared = {"_made": self._made, "_lock": self._lock} if same else {"_made": {}}
        return replace(self, **shared, **changes)

    def fields(self) -> dict:
        """The public fields, {name: value}."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def scoring(self, name: str | None = None, **changes) -> Method:
        """The scoring method these fields name (`score.Method`, the one place options become
        one), with `changes` to its fields; named "ActAlign" or "mean-pool" unless `name`."""
        values = dict(
            kind=self.method,
            template=self.template,
            smooth_seconds=self.smooth,
            strategy=self.strategy,
            alignment=self.alignment,
            prompt=self.mean_pool_template,
        )
        values.update(changes)
        if values["kind"] in BASELINES:  # a baseline aligns nothing: its Config's ActAlign
            values["kind"] = "actalign"
        return Method(name or ("ActAlign" if values["kind"] == "actalign" else "mean-pool"), **values)

    def expected_dtype(self) -> str | None:
        """The precision a run of this Config will have, when it is known without loading torch:
        the `dtype` given, else on the CPU its own choice (bfloat16 units or not); None for a
        GPU or an unnamed device without a `dtype` (only torch can say)."""
        if self.dtype is not None:
            return self.dtype
        if self.device == "cpu" or (self.device is None and _no_gpu_driver()):
            from actalign.encoders.cpu import default_cpu_dtype

            return default_cpu_dtype()
        return None

    # ------------------------------------------------------------------ the record of a result

    def record(self, encoder=None) -> dict:
        """What produced a result: the model (and, given the loaded encoder, its exact identity,
        precision and text encoding), sampling and method. The `settings` block of classify's and
        locate's JSON and the method part of a run folder's config.json, under the same keys."""
        out = {
            "model": self.model,
            "model_identity": getattr(encoder, "identity", None),
            "dtype": getattr(encoder, "dtype_name", None) if encoder is not None else self.dtype,
            "text_encoding": getattr(encoder, "text_encoding", self.text_encoding),
            "method": self.method,
            "fps": None if self.fps is None else float(self.fps),
        }
        if self.method == "mean-pool":
            out["mean_pool_template"] = self.mean_pool_template
        else:
            out.update(smooth=float(self.smooth), template=self.template, alignment=self.alignment)
        return out

    # ------------------------------------------------------------------ what the fields make

    def encoder(self, towers: str = "both"):
        """The encoder these fields name (loaded now; `ActAlign` keeps the one it makes). towers
        "text": the text tower alone, for embedding texts (`load_encoder`)."""
        from actalign.encoders import load_encoder

        extra = {} if towers == "both" else {"towers": towers}
        return load_encoder(
            self.model,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            text_encoding=self.text_encoding,
            compile=self.compile,
            **extra,
        )

    def cache(self):
        """The embedding cache, or None with no_cache."""
        from actalign.encoders.cache import EmbeddingCache

        return None if self.no_cache else EmbeddingCache(self.cache_dir)

    def writer(self, required: bool = False):
        """The LLM writer these fields (or the environment) name, made once and kept (an
        in-process model loads on its first generation); None when none is configured and none
        is `required`."""
        from actalign.scripts import make_writer

        with self._lock:
            if "writer" not in self._made:
                self._made["writer"] = make_writer(self.llm, self.llm_model, self.llm_base_url)
            writer = self._made["writer"]
        if writer is None and required:
            return make_writer(self.llm, self.llm_model, self.llm_base_url, required=True)
        return writer

    def script_source(self, strategy: str | None = None, need_writer: bool = False, store=None):
        """Scripts: the files, then the store, then the writer (when configured or needed)."""
        from actalign.scripts import ScriptSource, ScriptStore

        store = store if store is not None else ScriptStore(self.store)
        return ScriptSource(self.scripts, store, self.writer(need_writer), strategy or self.strategy)


_WRITER_FIELDS = ("llm", "llm_model", "llm_base_url")


def _no_gpu_driver() -> bool:
    """Linux without an NVIDIA or AMD GPU driver: the best device is the CPU (known without torch)."""
    import os
    import platform

    gpu_paths = ("/proc/driver/nvidia/version", "/dev/kfd")
    return platform.system() == "Linux" and not any(os.path.exists(p) for p in gpu_paths)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ActAlignError(f"Unknown {name} {value!r}; use one of {', '.join(choices)}.")


def _paths(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        return (str(value),)
    return tuple(str(v) for v in value)
