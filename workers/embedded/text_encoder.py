"""A small text encoder over a word vocabulary, as a diffusers model so pipelines save and load it like any part.

It reads the prompt as a word sequence (order matters: "a red cat with a blue hat" is not "a blue cat with a
red hat") and returns one vector, which the UNet adds to its timestep embedding.
"""

from __future__ import annotations

import re

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

PAD, BOS, UNK = 0, 1, 2
_SPECIALS = ("<pad>", "<bos>", "<unk>")
_WORD = re.compile(r"[a-z]+")


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
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out_dim))

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Word ids, BOS first, padded; unknown words become UNK and words past max_len are dropped."""
        n = self.config.max_len
        rows = [[BOS, *(self.vocab.get(w, UNK) for w in _WORD.findall(p.lower()))][:n] for p in prompts]
        ids = torch.full((len(prompts), n), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids.to(self.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=ids == PAD)
        return self.out(x[:, 0])  # the BOS position has read the whole prompt

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self(self.tokenize(prompts))
