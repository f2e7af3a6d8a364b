"""SigLIP's vision and text towers in plain torch (transformers' `SiglipModel`, model type
"siglip"), filled from a checkpoint's safetensors under transformers' key names.

    vision: pixels (B, 3, S, S) -> patch conv (B, N, D) + learned positions -> pre-LN encoder
            -> post-layernorm -> attention-pooling head (a learned probe) -> (B, D)
    text:   ids (B, L) -> token + position embeddings -> pre-LN encoder (bidirectional; the
            padding mask when given) -> final layernorm -> head Linear on the LAST position -> (B, P)

The modules are built on the meta device (no random initialisation) and take the checkpoint's
tensors as they are (`load_state_dict(assign=True)`), read through safetensors' memory map.
Importing this module imports torch; `native` imports it only when a model loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from actalign.errors import ActAlignError


class Pooled(NamedTuple):
    """A tower's output as transformers 5 names it (`common._features` reads `pooler_output`)."""

    pooler_output: torch.Tensor


def _embedding(n: int, d: int) -> nn.Embedding:
    """An (n, d) embedding without its random init: normal_ on the meta device would import
    torch._dynamo (~1 s), the cost this module exists to avoid."""
    return nn.Embedding(n, d, _weight=torch.empty(n, d))


class GeluTanh(nn.Module):
    """tanh-GELU (transformers' GELUTanh, "gelu_pytorch_tanh"); `common._gelu_in_place` swaps it
    for the in-place kernel on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class Gelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)


class MLP(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.activation_fn = GeluTanh() if c["hidden_act"] == "gelu_pytorch_tanh" else Gelu()
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention."""

    def __init__(self, c: dict) -> None:
        super().__init__()
        d, self.heads = c["hidden_size"], c["num_attention_heads"]
        if d % self.heads:
            raise ActAlignError(f"The checkpoint's width {d} is not divisible by its {self.heads} heads.")
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def _qkv(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, D), mask (B, 1, 1, L) bool (True: attend) or None -> (B, L, D)."""
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in self._qkv())
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=(d // self.heads) ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.self_attn = Attention(c)
        self.layer_norm2 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c["num_hidden_layers"]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class VisionEmbeddings(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        p = c["patch_size"]
        self.patch_embedding = nn.Conv2d(c["num_channels"], c["hidden_size"], kernel_size=p, stride=p)
        self.position_embedding = _embedding((c["image_size"] // p) ** 2, c["hidden_size"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, N, D), N = (S / patch)^2."""
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))
        return x.flatten(2).transpose(1, 2) + self.position_embedding.weight


class PoolingHead(nn.Module):
    """Attention pooling: one learned probe attends over the patches (MAP head)."""

    def __init__(self, c: dict) -> None:
        super().__init__()
        d = c["hidden_size"]
        self.probe = nn.Parameter(torch.empty(1, 1, d))
        self.attention = nn.MultiheadAttention(d, c["num_attention_heads"], batch_first=True)
        self.layernorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D)."""
        probe = self.probe.repeat(x.shape[0], 1, 1)
        x = self.attention(probe, x, x)[0]
        return (x + self.mlp(self.layernorm(x)))[:, 0]


class VisionTower(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(c)
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.head = PoolingHead(c) if c["vision_use_head"] else None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D)."""
        if self.head is None:
            raise ActAlignError(
                "This SigLIP checkpoint's vision tower has no pooling head (`vision_use_head` is "
                "false), so it gives no image embedding; use an image-text SigLIP checkpoint."
            )
        return self.head(self.post_layernorm(self.encoder(self.embeddings(pixels))))


class TextEmbeddings(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.token_embedding = _embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = _embedding(c["max_position_embeddings"], c["hidden_size"])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, D)."""
        if ids.shape[-1] > self.position_embedding.num_embeddings:
            raise ActAlignError(
                f"{ids.shape[-1]} tokens are more than the text tower's "
                f"{self.position_embedding.num_embeddings} positions; pass `truncation=True`."
            )
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[-1]]


class TextTower(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(c)
        self.encoder = Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.head = nn.Linear(c["hidden_size"], c["projection_size"] or c["hidden_size"])

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, L), attention_mask (B, L) of 1 / 0 or None -> (B, P), read at position L - 1
        whatever the mask (as transformers and big_vision do)."""
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        x = self.final_layer_norm(self.encoder(self.embeddings(ids), mask))
        return self.head(x[:, -1, :])


class SiglipTowers(nn.Module):
    """transformers' SiglipModel's parameters (same names) and its two feature methods."""

    def __init__(self, text: dict, vision: dict | None) -> None:
        super().__init__()
        self.text_model = TextTower(text)
        self.vision_model = VisionTower(vision) if vision is not None else None
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(B, L) ids -> pooler_output (B, P), not normalised."""
        return Pooled(self.text_model(input_ids, attention_mask))

    def get_image_features(self, pixel_values: torch.Tensor) -> Pooled:
        """(B, 3, S, S) -> pooler_output (B, D), not normalised."""
        if self.vision_model is None:
            raise ActAlignError(
                "This model was built without its vision tower; load it with `towers='both'`."
            )
        return Pooled(self.vision_model(pixel_values))


# ---------------------------------------------------------------------- from the checkpoint


def build(text: dict, vision: dict | None, weights: list[Path]) -> SiglipTowers:
    """The towers of SigLIP's settings (`native.tower_configs`), filled from its safetensors files
    (`weights`: the files, or one index); with `vision` None the vision tower is neither built nor
    read."""
    with torch.device("meta"):
        model = SiglipTowers(text, vision)
    wanted = set(model.state_dict())
    state = read_safetensors(weights, lambda key: key in wanted)
    missing = sorted(wanted - set(state))
    if missing:
        raise ActAlignError(
            f"The checkpoint lacks {len(missing)} of SigLIP's weights ({', '.join(missing[:3])}, ...); "
            "load it through transformers (ACTALIGN_LOADER=transformers)."
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def read_safetensors(files: Iterable[Path], keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The tensors whose names `keep` accepts, from safetensors files or a sharded checkpoint's
    index (model.safetensors.index.json: only the shards that hold a kept tensor are opened)."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path in _shards(list(files), keep):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is no dict)
                if keep(key):
                    state[key] = f.get_tensor(key)
    return state


def _shards(files: list[Path], keep: Callable[[str], bool]) -> list[Path]:
    out = []
    for path in files:
        if path.name.endswith(".index.json"):
            weight_map = json.loads(path.read_text())["weight_map"]
            names = sorted({f for k, f in weight_map.items() if keep(k)})
            out += [path.parent / n for n in names]
        else:
            out.append(path)
    return out
