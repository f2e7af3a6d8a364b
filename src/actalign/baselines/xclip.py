"""X-CLIP (Ni et al. 2022), the paper's video-text baseline (Table 2: X-CLIP-L/14-16F), through
transformers' XCLIPModel.

    xclip = XClip()                                    # microsoft/xclip-large-patch14-16-frames
    idx = xclip.frame_indices(len(decoded))            # segment centres, xclip.num_frames of them
    logits = xclip.score(decoded[idx], ["Tip-in", "Putback dunk"])   # (M,) video-text logits

A checkpoint sees exactly its `num_frames` frames (the count is built into its temporal layers and
positions). Frames are prepared as the checkpoint's processor prepares them (its preprocessor
config: shortest edge, centre crop, rescale, mean/std) with PIL's resampling, as transformers' PIL
backend does, without needing the processor class itself. Texts are the CLIP tokenizer's, at most
77 tokens. The score of a text is the model's own `logits_per_video`: the video embedding against
the text embedding after X-CLIP's video-conditioned prompt, times the learned logit scale.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from actalign.baselines.common import (
    dtype_kwargs,
    parameter_count,
    resolve_dtype,
    segment_centres,
    uint8_frames,
)
from actalign.errors import ActAlignError
from actalign.hub import load_checkpoint

DEFAULT_XCLIP = "microsoft/xclip-large-patch14-16-frames"
TEXT_LIMIT = 77  # CLIP's context


class XClip:
    """An X-CLIP checkpoint (a hub id or a save_pretrained folder) that scores texts against a clip."""

    def __init__(
        self, name_or_path: str = DEFAULT_XCLIP, device: str | None = None, dtype: str | None = None
    ):
        from actalign.encoders.base import select_device

        self.name_or_path = str(name_or_path)
        self.device = select_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        (self.model, self.tokenizer, image_processor), source = load_checkpoint(
            self.name_or_path, functools.partial(_load_xclip, dtype=self.dtype), "X-CLIP model"
        )
        self.model.to(device=self.device, dtype=self.dtype).eval()
        vision = self.model.config.vision_config
        self.num_frames = int(vision.num_frames)
        self._plan = _plan(image_processor, int(vision.image_size))
        self.image_size = self._plan["crop"][0] if self._plan["crop"] else int(vision.image_size)
        self.decode_size = self._plan["shortest_edge"]  # what the decoder may resize frames to
        self.identity = f"{source}|{str(self.dtype).removeprefix('torch.')}"
        self.parameters = parameter_count(self.model)

    def frame_indices(self, n_available: int, num_frames: int | None = None) -> np.ndarray:
        """Which of `n_available` decoded frames to give the model: `num_frames` (the checkpoint's by
        default) segment centres, i.e. frame floor((i + 1/2) n / k) for i < k."""
        return segment_centres(n_available, self.num_frames if num_frames is None else num_frames)

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (N, H, W, 3) -> pixel values (N, 3, S, S) float32, as the checkpoint's
        processor computes them."""
        from PIL import Image

        frames = uint8_frames(frames)
        plan = self._plan
        h, w = frames.shape[1:3]
        size = plan["size"]
        if plan["shortest_edge"] is not None:
            size = _shortest_edge_size(h, w, plan["shortest_edge"])
        if size is not None and size != (h, w):
            resample = plan["resample"]
            frames = np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], resample)) for f in frames])
        if plan["crop"] is not None:
            frames = _centre_crop(frames, *plan["crop"])
        if plan["rescale"] is not None:  # in float64, then float32, as transformers rescales
            x = (frames.astype(np.float64) * plan["rescale"]).astype(np.float32)
        else:
            x = frames.astype(np.float32)
        if plan["mean"] is not None:
            x = (x - plan["mean"]) / plan["std"]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def score(self, frames: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """The model's video-text logits (M,) of `texts` for one clip given as exactly `num_frames`
        uint8 RGB frames (num_frames, H, W, 3), in time order."""
        import torch

        frames = uint8_frames(frames)
        if len(frames) != self.num_frames:
            raise ActAlignError(
                f"X-CLIP {self.name_or_path} takes exactly {self.num_frames} frames per clip, got "
                f"{len(frames)}; sample them with frame_indices."
            )
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ActAlignError("X-CLIP needs at least one text to score, and no empty texts.")
        pixels = torch.from_numpy(self.preprocess(frames))[None].to(self.device, self.dtype)
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=TEXT_LIMIT, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
                pixel_values=pixels,
            )
        return out.logits_per_video[0].float().cpu().numpy()


# ---------------------------------------------------------------------- loading


def _load_xclip(where: str, local_files_only: bool, dtype=None):
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, XCLIPModel

    config = AutoConfig.from_pretrained(where, local_files_only=local_files_only)
    if config.model_type != "xclip":
        raise ActAlignError(
            f"{where} is a '{config.model_type}' model; the X-CLIP baseline needs an X-CLIP checkpoint "
            "such as microsoft/xclip-large-patch14-16-frames."
        )
    model = XCLIPModel.from_pretrained(where, local_files_only=local_files_only, **dtype_kwargs(dtype))
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_files_only)
    image_processor = AutoImageProcessor.from_pretrained(where, local_files_only=local_files_only)
    return model, tokenizer, image_processor


def _plan(ip, image_size: int) -> dict:
    """The preprocessing steps and constants a (VideoMAE / CLIP) image processor config names."""
    size = getattr(ip, "size", None) or {}
    size = dict(size) if not isinstance(size, int) else {"shortest_edge": size}
    size = {k: v for k, v in size.items() if v is not None}
    shortest = fixed = None
    if getattr(ip, "do_resize", True):
        if "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif "height" in size and "width" in size:
            fixed = (int(size["height"]), int(size["width"]))
        else:
            shortest = image_size
    crop = None
    if getattr(ip, "do_center_crop", False):
        cs = getattr(ip, "crop_size", None) or {"height": image_size, "width": image_size}
        cs = {"height": cs, "width": cs} if isinstance(cs, int) else cs
        crop = (int(cs["height"]), int(cs["width"]))
    mean = std = None
    if getattr(ip, "do_normalize", True):
        mean = np.asarray(ip.image_mean, dtype=np.float32).reshape(1, 1, 1, -1)
        std = np.asarray(ip.image_std, dtype=np.float32).reshape(1, 1, 1, -1)
    rescale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else None
    resample = getattr(ip, "resample", None)
    return {
        "shortest_edge": shortest,
        "size": fixed,
        "crop": crop,
        "mean": mean,
        "std": std,
        "rescale": rescale,
        "resample": 2 if resample is None else int(resample),  # PIL's BILINEAR
    }


def _shortest_edge_size(h: int, w: int, edge: int) -> tuple[int, int]:
    """(height, width) with the shorter side `edge`, the longer scaled and truncated, as
    transformers' get_resize_output_image_size(default_to_square=False)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = edge, int(edge * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def _centre_crop(frames: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """The centre (ch, cw) window; a frame smaller than it is zero-padded first, as transformers'
    center_crop does (its top/left rounding included)."""
    n, h, w, c = frames.shape
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return frames[:, top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    pad_top, pad_left = -(-(nh - h) // 2), -(-(nw - w) // 2)
    padded = np.zeros((n, nh, nw, c), frames.dtype)
    padded[:, pad_top : pad_top + h, pad_left : pad_left + w] = frames
    top, left = top + pad_top, left + pad_left
    return padded[:, max(0, top) : min(nh, top + ch), max(0, left) : min(nw, left + cw)]
