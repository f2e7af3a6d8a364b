"""One settings object for every front end: built from the command line (and the environment), it
makes the encoder, the embedding cache, the script source (files, store, LLM writer: a server or
in-process) and the pipeline. The CLI's commands and the app both use it; the app adds only its
page fields (`actalign.app.AppSettings`).

    settings = Settings.from_args(args)          # or Settings(model="siglip-base", fps=4)
    model = settings.pipeline()                   # ActAlign with the encoder, cache and scripts
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields, replace

from actalign.encoders import DEFAULT_MODEL
from actalign.score import DEFAULT_TEMPLATE, MEAN_POOL_TEMPLATE


@dataclass(frozen=True)
class Settings:
    """What a run is made of. `None` means the documented default."""

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
    scripts: tuple[str, ...] = ()  # hand-written scripts files; they win over stored ones
    store: str | None = None
    strategy: str = "context-rich"
    llm: str | None = None  # local:ID_OR_DIR, an endpoint, or openai (default $ACTALIGN_LLM)
    llm_model: str | None = None
    llm_base_url: str | None = None
    # method
    method: str = "actalign"
    fps: float | None = None
    smooth: float = 1.0
    template: str = DEFAULT_TEMPLATE
    mean_pool_template: str = MEAN_POOL_TEMPLATE
    alignment: str = "global"
    _writers: dict = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def from_args(cls, args) -> Settings:
        """The settings a parsed command line gives (options a command lacks keep their defaults)."""
        values = {}
        for f in fields(cls):
            if f.name.startswith("_") or not hasattr(args, f.name):
                continue
            values[f.name] = getattr(args, f.name)
        if values.get("model") is None:
            values["model"] = DEFAULT_MODEL
        values["scripts"] = tuple(values.get("scripts") or ())
        return cls(**values)

    def replace(self, **changes) -> Settings:
        """A copy with some settings changed (the same LLM writer is kept)."""
        return replace(self, _writers=self._writers, _lock=self._lock, **changes)

    # ------------------------------------------------------------------ what the settings make

    def encoder(self, model: str | None = None):
        """The encoder (`model` overrides this setting's)."""
        from actalign.encoders import load_encoder

        return load_encoder(
            model or self.model,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            text_encoding=self.text_encoding,
            compile=self.compile,
        )

    def cache(self):
        """The embedding cache, or None with --no-cache."""
        from actalign.encoders.cache import EmbeddingCache

        return None if self.no_cache else EmbeddingCache(self.cache_dir)

    def writer(self, required: bool = False):
        """The LLM writer these settings name (--llm, $ACTALIGN_LLM, the OpenAI settings), made once
        and kept (an in-process model loads on its first generation); None when none is
        configured and none is `required`."""
        from actalign.scripts import make_writer

        with self._lock:
            if "writer" not in self._writers:
                self._writers["writer"] = make_writer(self.llm, self.llm_model, self.llm_base_url)
            writer = self._writers["writer"]
        if writer is None and required:
            return make_writer(self.llm, self.llm_model, self.llm_base_url, required=True)
        return writer

    def script_source(self, need_writer: bool = False, strategy: str | None = None, store=None):
        """Scripts: the files, then the store, then the writer (when configured or needed)."""
        from actalign.scripts import ScriptSource, ScriptStore

        store = store if store is not None else ScriptStore(self.store)
        return ScriptSource(self.scripts, store, self.writer(need_writer), strategy or self.strategy)

    def pipeline(self, encoder=None, scripts=None, **overrides):
        """The ActAlign pipeline of these settings (encoder and scripts made unless given)."""
        from actalign.classify import ActAlign

        options = dict(
            fps=self.fps,
            smooth_seconds=self.smooth,
            template=self.template,
            method=self.method,
            mean_pool_template=self.mean_pool_template,
            alignment=self.alignment,
            strategy=self.strategy,
        )
        options.update(overrides)
        cache = self.cache()
        return ActAlign(
            encoder or self.encoder(),
            scripts if scripts is not None else self.script_source(),
            cache=cache if cache is not None else False,
            **options,
        )
