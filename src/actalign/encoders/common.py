"""What the SigLIP / CLIP encoders share, whichever code loads their weights: the encoding of
frames and texts (`ImageTextEncoder`), the choice of precision, the CPU's in-place GELU and int8,
and the fast path from decoded frames to pixel_values.

Subclasses (`hf.TransformersEncoder`, `native.NativeEncoder`) say how a checkpoint is imported
and loaded (`_import_stack`, `_load`); everything after the load is here, so the two give the
same numbers, identity and behaviour for the same checkpoint. Nothing here imports torch on
import.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from actalign import startup
from actalign.encoders.base import Encoder, select_device
from actalign.errors import ActAlignError

SIGLIP_TEXT_LENGTH = 64  # SigLIP was trained on texts padded to 64 tokens; dynamic padding hurts
FAMILIES = ("siglip", "siglip2", "clip")
TEXT_ENCODINGS = ("trained", "authors")
TOWERS = ("both", "text")


def _trained_on_lowercase(family: str, tokenizer) -> bool:
    """SigLIP 2 was trained on lower-cased texts. Its NaFlex checkpoints say so by their model type
    (siglip2); its fixed-resolution ones (siglip2-so400m-patch14-384, ...) load as plain SigLIP and
    are told apart by their Gemma tokenizer (SigLIP 1 uses its own sentencepiece vocabulary)."""
    return family == "siglip2" or (family == "siglip" and "gemma" in type(tokenizer).__name__.lower())


def _features(out) -> torch.Tensor:  # noqa: F821
    """get_*_features returns a tensor in transformers 4.x and an output object in 5.x."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(out, attr, None)
        if value is not None:
            return value
    raise ActAlignError(f"Unexpected output {type(out).__name__} from the model's feature method.")


class ImageTextEncoder(Encoder):
    """An image-text model (SigLIP / SigLIP 2 / CLIP families) with `model.get_image_features`,
    `model.get_text_features`, `model.logit_scale` (and `logit_bias`) and a processor with
    `tokenizer` and `image_processor`. Subclasses implement `_import_stack` and `_load`.

    towers: "both", or "text" to build the text tower alone (encode_images then refuses); the
    identity is the same either way, so text embeddings stay shared in the caches.
    """

    def __init__(
        self,
        name_or_path: str,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        text_encoding: str = "trained",
        compile: bool = False,
        towers: str = "both",
    ) -> None:
        if text_encoding not in TEXT_ENCODINGS:
            raise ActAlignError(
                f"Unknown text encoding {text_encoding!r}; use one of {', '.join(TEXT_ENCODINGS)}."
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ActAlignError(f"The batch size must be a whole number >= 1, got {batch_size!r}.")
        if towers not in TOWERS:
            raise ActAlignError(f"Unknown `towers` {towers!r}; use one of {', '.join(TOWERS)}.")
        self.text_encoding = text_encoding
        self.towers = towers
        self._options = {
            "device": device,
            "dtype": dtype,
            "batch_size": batch_size,
            "text_encoding": text_encoding,
            "compile": compile,
            "towers": towers,
        }
        startup.mark_before()
        with startup.timed("imports"):
            self._import_stack()
        with startup.timed("model"):
            self._build(name_or_path, device, dtype, batch_size, compile)

    # ------------------------------------------------------------ what subclasses say

    def _import_stack(self) -> None:
        """Import the modules the load needs, so that `startup` times them apart from it."""
        raise NotImplementedError

    def _load(self, name_or_path: str) -> tuple:
        """(model, processor, family, source identity) of a folder or hub id."""
        raise NotImplementedError

    def _activations(self) -> tuple[type, ...]:
        """The model's tanh-GELU module classes, computed in place on CPU (`_gelu_in_place`)."""
        return ()

    # ------------------------------------------------------------ the load

    def _build(self, name_or_path: str, device, dtype, batch_size, compile: bool) -> None:
        import torch

        self.device = select_device(device)
        self.dtype_name = dtype_name_for(dtype, self.device)  # settings.dtype of every result
        # int8: float32 tensors through dynamically quantised Linear layers (see _quantise)
        self.dtype = torch.float32 if self.dtype_name == "int8" else getattr(torch, self.dtype_name)
        self.name_or_path = name_or_path
        self.model, self.processor, self.family, source = self._load(name_or_path)
        if self.family not in FAMILIES:
            raise ActAlignError(
                f"{name_or_path} is a '{self.family}' model; actalign supports {', '.join(FAMILIES)} "
                "image-text models."
            )
        # Eq. 9's scale and bias as learned, read before a half-precision cast rounds them
        self.scale = float(self.model.logit_scale.detach().float().exp())
        bias = getattr(self.model, "logit_bias", None)
        self.bias = float(bias.detach().float()) if bias is not None else None
        self.model.to(device=self.device, dtype=self.dtype).eval()
        if self.device == "cpu":
            _gelu_in_place(self.model, self._activations())
        if self.dtype_name == "int8":
            self.model = _quantise(self.model)
        self.batch_size = batch_size or (64 if self.device != "cpu" else 16)
        self.lowercase = _trained_on_lowercase(self.family, self.processor.tokenizer)
        self.identity = f"{source}|{self.dtype_name}"
        self._plan = _pixel_plan(self.processor.image_processor, self.device)
        self.decode_size = self._plan["decode_size"] if self._plan else None
        compile = compile and self.towers == "both"
        self._compiled = torch.compile(self.model.get_image_features, dynamic=False) if compile else None
        self.compiled = compile
        with torch.inference_mode():
            probe = self.encode_texts(["a"])
        self.dim = probe.shape[1]

    def factory(self):
        """The same model and options, for another process (its device chosen there when it was
        not given: each Ray actor takes its own GPU)."""
        return functools.partial(type(self), self.name_or_path, **self._options)

    # ------------------------------------------------------------------ images

    def _pixels(self, frames: np.ndarray) -> dict:
        """pixel_values for uint8 frames (B, H, W, 3): the frames go to the device as uint8 (a
        quarter of the bytes of float32, pinned for an asynchronous copy on CUDA) and are resized,
        cropped and normalised there, in float32, then cast to the model's dtype."""
        import torch

        if self._plan is None:  # unusual processors (e.g. NaFlex): let them do everything
            inputs = dict(self.processor.image_processor(images=list(frames), return_tensors="pt"))
            return {k: _to_device(v, self.device, self.dtype) for k, v in inputs.items()}
        plan = self._plan
        x = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        h, w = x.shape[2:]
        if plan["resize"] is not None and (w, h) != plan["resize"](w, h):
            nw, nh = plan["resize"](w, h)
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True)
            x = x.clamp(0, 255)
        if plan["crop"] is not None:
            ch, cw = plan["crop"]
            top, left = max(0, (x.shape[2] - ch) // 2), max(0, (x.shape[3] - cw) // 2)
            x = x[:, :, top : top + ch, left : left + cw]
        x = x * plan["rescale"]
        if plan["mean"] is not None:
            x = (x - plan["mean"]) / plan["std"]
        return {"pixel_values": x.to(self.dtype)}

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        if self.towers == "text":
            raise ActAlignError(
                f"{self.name_or_path} was loaded with its text tower only (`towers='text'`); load it "
                "with `towers='both'` to encode frames."
            )
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ActAlignError(f"Frames must be (B, H, W, 3) RGB arrays, got shape {frames.shape}.")
        out = []
        for i in range(0, len(frames), self.batch_size):
            with startup.timed("first batch"):  # this process's first forward pass (once)
                out.append(self._encode_batch(frames[i : i + self.batch_size]))
        return np.concatenate(out) if out else np.empty((0, getattr(self, "dim", 0)), np.float32)

    def _encode_batch(self, chunk: np.ndarray) -> np.ndarray:
        import torch

        n = len(chunk)
        if self.compiled and n < self.batch_size:  # one shape for the compiled graph
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - n, axis=0)])
        with torch.inference_mode(), _oom_guard(self):
            inputs = self._pixels(chunk)
            forward = self._compiled or self.model.get_image_features
            return _unit(_features(forward(**inputs))[:n])

    # ------------------------------------------------------------------ texts

    def tokenize(self, texts: Sequence[str]) -> dict:
        """Token tensors for `texts`, as the model was trained (see `encode_texts`)."""
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        tok = self.processor.tokenizer
        if self.family in ("siglip", "siglip2"):
            if self.text_encoding == "authors":
                return dict(tok(texts, padding=True, truncation=True, return_tensors="pt"))
            ids = tok(
                texts,
                padding="max_length",
                max_length=SIGLIP_TEXT_LENGTH,
                truncation=True,
                return_tensors="pt",
            )["input_ids"]
            return {"input_ids": ids}
        limit = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        return dict(tok(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """texts (K,) -> (K, d) unit rows.

        SigLIP / SigLIP 2 ("trained", the default): padded to 64 tokens and given as input_ids
        alone, with no padding mask, as big_vision trained them (every position attends to the
        pads and the embedding is read at the last, padded position; open_clip does the same).
        CLIP keeps its mask (causal attention and end-of-text pooling make the pads irrelevant).
        text_encoding="authors" reproduces the original ActAlign scripts instead: one tokenizer
        call over exactly `texts` with dynamic padding and the mask, so call it with one
        candidate's steps at a time (as `embed_text_groups` does).
        """
        import torch

        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ActAlignError("No texts to encode.")
        texts = list(texts)
        step = len(texts) if self.text_encoding == "authors" else max(self.batch_size, 64)
        out = []
        for i in range(0, len(texts), step):
            inputs = {k: v.to(self.device) for k, v in self.tokenize(texts[i : i + step]).items()}
            with torch.inference_mode(), _oom_guard(self):
                out.append(_unit(_features(self.model.get_text_features(**inputs))))
        return np.concatenate(out)


# ---------------------------------------------------------------------- helpers


def _unit(x: torch.Tensor) -> np.ndarray:  # noqa: F821
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float32)


def dtype_name_for(dtype: str | None, device: str) -> str:
    """The precision to run in, by name: `dtype` as given, else half precision on GPU and, on CPU,
    bfloat16 where the CPU has bfloat16 matrix units (AMX, AVX-512 BF16) and float32 elsewhere."""
    import torch

    if dtype is None:
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device == "mps":
            return "float16"
        from actalign.encoders.cpu import default_cpu_dtype

        return default_cpu_dtype()
    if dtype == "int8":
        if device != "cpu":
            raise ActAlignError(
                f"`dtype=int8` (dynamic quantisation) runs on the CPU only; on {device} use bfloat16 "
                "or float16, or add `device=cpu`."
            )
        return dtype
    try:
        value = getattr(torch, dtype)
    except (AttributeError, TypeError):
        value = None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ActAlignError(f"Unknown dtype {dtype!r}; use float32, float16, bfloat16 or int8 (CPU).")
    return str(value).removeprefix("torch.")


def _gelu_in_place(model, kinds: tuple[type, ...]) -> int:
    """Each tanh-GELU of the model (SigLIP's MLPs: modules of a class in `kinds`) computed in place
    on CPU: the same kernel and the same numbers, without a new activation-sized buffer per layer
    (float32, batch 16, a SigLIP-base MLP's 3152x3072 activation: 73 instead of 92 ms on an AVX2
    EPYC; no change in bfloat16; docs/benchmarks.md). Returns how many it replaced."""
    replaced = 0
    for module in model.modules():
        if kinds and type(getattr(module, "activation_fn", None)) in kinds:
            module.activation_fn = _in_place_gelu()()
            replaced += 1
    return replaced


@functools.lru_cache(maxsize=1)
def _in_place_gelu():
    """The module class (built on first use: this module does not import torch on import)."""
    import torch

    class InPlaceGeluTanh(torch.nn.Module):
        """tanh-GELU written over its input, where nothing needs the input kept (no autograd)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() and x.requires_grad:
                return torch.nn.functional.gelu(x, approximate="tanh")
            return torch._C._nn.gelu_(x, approximate="tanh")

    return InPlaceGeluTanh


def _quantise(model):
    """The model with its Linear layers quantised to int8 (weights ahead, activations per batch),
    both towers: 1.4-1.6x float32 per core on an AVX2 EPYC, 2.0x on a Xeon, cosine >= 0.9995 to
    float32 on the benchmarks' random-weight models (docs/benchmarks.md)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice (torchao) is not the user's concern
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError:
            raise ActAlignError(
                f"`dtype=int8` needs torch.ao.quantization.quantize_dynamic, which torch "
                f"{torch.__version__} lacks; use `dtype=float32`."
            ) from None
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True).eval()


def _to_device(v, device: str, dtype):
    return v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)


def _pixel_plan(ip, device: str = "cpu") -> dict | None:
    """How to turn decoded frames into pixel_values without the (slow, PIL) processor, or None."""
    import torch

    size = getattr(ip, "size", None) or {}
    if getattr(ip, "do_resize", True) is False:
        resize = None
        decode = None
    elif "height" in size and "width" in size:
        target = (int(size["width"]), int(size["height"]))
        resize = lambda w, h, t=target: t  # noqa: E731
        decode = target
    elif "shortest_edge" in size:
        s = int(size["shortest_edge"])

        def resize(w, h, s=s):
            from actalign.video import shortest_edge_size

            return shortest_edge_size(w, h, s)

        decode = s
    else:
        return None
    crop = None
    if getattr(ip, "do_center_crop", False):
        cs = ip.crop_size
        crop = (int(cs["height"]), int(cs["width"]))
    mean = std = None
    if getattr(ip, "do_normalize", True):
        mean = torch.tensor(ip.image_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(ip.image_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    rescale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else 1.0
    return {
        "resize": resize,
        "decode_size": decode,
        "crop": crop,
        "mean": mean,
        "std": std,
        "rescale": rescale,
    }


class _oom_guard:
    """Turn device out-of-memory errors into one clear sentence."""

    def __init__(self, encoder: ImageTextEncoder) -> None:
        self.encoder = encoder

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and "out of memory" in str(exc).lower():
            b = self.encoder.batch_size
            raise ActAlignError(
                f"Out of memory on {self.encoder.device} with batch size {b}; "
                f"try a smaller batch (`batch_size={max(1, b // 2)}`)."
            ) from None
        return False
