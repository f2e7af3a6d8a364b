"""SigLIP's tokenizer (transformers' `SiglipTokenizer`) on sentencepiece alone, without importing
transformers: the same ids, truncation, padding and mask for the calls actalign makes.

Its rules, as transformers 5 applies them: the text is split on the added tokens ("</s>",
"<unk>", ...); each piece is lower-cased (`do_lower_case`), stripped of ASCII punctuation, its
whitespace runs collapsed to one space and trimmed, and encoded by sentencepiece behind the unk
token (whose own pieces are then dropped); "</s>" ends the sequence unless it already does.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from pathlib import Path

SPIECE_UNDERLINE = "\u2581"
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class SiglipSentencePiece:
    """`tokenizer(texts, padding=..., truncation=..., max_length=..., return_tensors="pt")` as
    transformers' SiglipTokenizer answers it: {"input_ids", "attention_mask"}, lists for one text
    without return_tensors, (B, L) int64 tensors with return_tensors="pt"."""

    def __init__(self, spiece: Path, config: dict) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        self.sp.Load(str(spiece))
        self.do_lower_case = bool(config.get("do_lower_case", True))
        self.model_max_length = int(config.get("model_max_length", 64))
        self.padding_side = config.get("padding_side", "right")
        self.truncation_side = config.get("truncation_side", "right")
        added = {int(k): v for k, v in (config.get("added_tokens_decoder") or {}).items()}
        self.added = {v["content"]: k for k, v in added.items()}  # content -> id
        self.strip = {v["content"]: (v.get("lstrip", False), v.get("rstrip", False)) for v in added.values()}
        self.eos_token = _content(config.get("eos_token", "</s>"))
        self.unk_token = _content(config.get("unk_token", "<unk>"))
        self.pad_token = _content(config.get("pad_token", "</s>"))
        for token in (self.eos_token, self.unk_token, self.pad_token):
            self.added.setdefault(token, self.sp.piece_to_id(token))
            self.strip.setdefault(token, (True, True))  # SiglipTokenizer's AddedToken without a config
        self.eos_token_id = self.added[self.eos_token]
        self.pad_token_id = self.added[self.pad_token]
        self._unk_length = len(self.sp.encode(self.unk_token, out_type=str))
        longest_first = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    # ------------------------------------------------------------ one text

    def _canonical(self, text: str) -> str:
        if self.do_lower_case:
            text = text.lower()
        return re.sub(r"\s+", " ", text.translate(_PUNCTUATION)).strip()

    def _pieces(self, text: str) -> list[str]:
        """One chunk between added tokens -> sentencepiece pieces."""
        text = self._canonical(text)
        pieces = self.sp.encode(self.unk_token + text, out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def tokens(self, text: str) -> list[str]:
        """A text's tokens, special tokens included as their text, before the end token."""
        chunks = [c for c in self._split.split(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "))]
        for i, chunk in enumerate(chunks):  # the added tokens' lstrip / rstrip
            if chunk in self.added:
                lstrip, rstrip = self.strip.get(chunk, (False, False))
                if rstrip and i + 1 < len(chunks) and chunks[i + 1]:
                    chunks[i + 1] = chunks[i + 1].lstrip()
                if lstrip and i > 0 and chunks[i - 1]:
                    chunks[i - 1] = chunks[i - 1].rstrip()
        out: list[str] = []
        for i, chunk in enumerate(chunks):
            if not chunk:
                continue
            out.extend([chunk] if chunk in self.added and i % 2 == 1 else self._pieces(chunk))
        if len(out) > 1 and out[0] == SPIECE_UNDERLINE and out[1] in self.added:
            out = out[1:]
        return out

    def ids(self, text: str, max_length: int | None = None) -> list[int]:
        """A text's ids, truncated to `max_length` with its end token (None: no truncation)."""
        ids = [self.added[t] if t in self.added else self.sp.piece_to_id(t) for t in self.tokens(text)]
        if max_length is not None and len(ids) + 1 > max_length:
            keep = max(max_length - 1, 0)
            ids = ids[:keep] if self.truncation_side == "right" else ids[len(ids) - keep :]
        return ids if ids and ids[-1] == self.eos_token_id else [*ids, self.eos_token_id]

    # ------------------------------------------------------------ a batch

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        limit = (max_length or self.model_max_length) if truncation else None
        rows = [self.ids(t, limit) for t in batch]
        if padding == "max_length" and max_length is not None:
            width = max(max_length, *(len(r) for r in rows)) if rows else max_length
        elif padding in (True, "longest"):
            width = max((len(r) for r in rows), default=0)
        else:
            width = None
        masks = [[1] * len(r) for r in rows]
        if width is not None:
            rows = [self._pad(r, width, self.pad_token_id) for r in rows]
            masks = [self._pad(m, width, 0) for m in masks]
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.tensor(rows, dtype=torch.long),
                    "attention_mask": torch.tensor(masks, dtype=torch.long)}  # fmt: skip
        if single:
            return {"input_ids": rows[0], "attention_mask": masks[0]}
        return {"input_ids": rows, "attention_mask": masks}

    def _pad(self, row: list[int], width: int, value: int) -> list[int]:
        fill = [value] * (width - len(row))
        return row + fill if self.padding_side == "right" else fill + row


def _content(token) -> str:
    """A special token as tokenizer_config.json gives it: a string or {"content": ...}."""
    return token["content"] if isinstance(token, dict) else str(token)


def load_tokenizer(spiece: Path, tokenizer_config: Path | None) -> SiglipSentencePiece:
    """The tokenizer of a SigLIP checkpoint from its spiece.model and tokenizer_config.json."""
    config = json.loads(tokenizer_config.read_text()) if tokenizer_config else {}
    return SiglipSentencePiece(spiece, config)
