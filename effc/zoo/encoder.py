"""A small post-LayerNorm (BERT-style) transformer encoder with attention written out as MatMul/Softmax."""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB_SIZE = 1000
D_MODEL = 128
NUM_HEADS = 4
FFN_DIM = 512
NUM_LAYERS = 2
MAX_POSITIONS = 128


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(D_MODEL, D_MODEL)
        self.key = nn.Linear(D_MODEL, D_MODEL)
        self.value = nn.Linear(D_MODEL, D_MODEL)
        self.out = nn.Linear(D_MODEL, D_MODEL)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        return x.view(batch, seq, NUM_HEADS, D_MODEL // NUM_HEADS).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        q, k, v = (self._split_heads(proj(x)) for proj in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D_MODEL // NUM_HEADS)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(context.transpose(1, 2).reshape(batch, seq, D_MODEL))


class EncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = SelfAttention()
        self.attention_norm = nn.LayerNorm(D_MODEL)
        self.ffn = nn.Sequential(nn.Linear(D_MODEL, FFN_DIM), nn.GELU(), nn.Linear(FFN_DIM, D_MODEL))
        self.ffn_norm = nn.LayerNorm(D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x))
        return self.ffn_norm(x + self.ffn(x))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB_SIZE, D_MODEL)
        self.position_embedding = nn.Parameter(torch.zeros(MAX_POSITIONS, D_MODEL))
        self.embedding_norm = nn.LayerNorm(D_MODEL)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(NUM_LAYERS))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0, 0.02)
        nn.init.normal_(self.position_embedding, 0, 0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]
        x = self.embedding_norm(x)
        for layer in self.layers:
            x = layer(x)
        return x
