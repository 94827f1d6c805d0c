"""A small text encoder over a word vocabulary, as a diffusers model so pipelines save and load it like any part.

It reads the prompt as a word sequence (order matters: "a red cat with a blue hat" is not "a blue cat with a
red hat") and gives the UNet two things, as Stable Diffusion XL's encoders do: the word states, which the
UNet's 8x8 layers cross-attend to (so the cat's pixels can read "red cat" and the hat's "blue hat"), and one
pooled vector, added to the timestep embedding.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

PAD, BOS, UNK = 0, 1, 2
_SPECIALS = ("<pad>", "<bos>", "<unk>")
_WORD = re.compile(r"[a-z]+")


class Encoded(NamedTuple):
    words: torch.Tensor  # (N, L, dim): one state per word, BOS first
    mask: torch.Tensor  # (N, L): True where there is a word, False on padding
    pooled: torch.Tensor  # (N, out_dim)

    def unet_kwargs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": self.words.to(dtype), "encoder_attention_mask": self.mask,
                "class_labels": self.pooled.to(dtype)}


class WordEncoder(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, words: list[str], dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 16,
                 out_dim: int = 128) -> None:
        super().__init__()
        self.vocab = {w: i for i, w in enumerate((*_SPECIALS, *words))}
        self.embed = nn.Embedding(len(self.vocab), dim)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, out_dim)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Word ids, BOS first, padded to the longest prompt; unknown words become UNK and words past max_len
        are dropped."""
        rows = [[BOS, *(self.vocab.get(w, UNK) for w in _WORD.findall(p.lower()))][: self.config.max_len]
                for p in prompts]
        ids = torch.full((len(prompts), max(map(len, rows))), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids.to(self.device)

    def forward(self, ids: torch.Tensor) -> Encoded:
        mask = ids != PAD
        x = self.embed(ids) + self.position[: ids.shape[1]]
        words = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        return Encoded(words, mask, self.pool(words[:, 0]))  # the BOS position has read the whole prompt

    def encode(self, prompts: list[str]) -> Encoded:
        return self(self.tokenize(prompts))
