"""The official release's transformer: DETR's post-norm encoder-decoder, positions added to queries and keys.

It differs from ``torch.nn.Transformer`` (which :class:`dptlib.method.adapter.DiscriminativeAdapter` uses) in
three ways, all DETR's:

- the position embedding is added to the queries and keys of every attention, never to the values
  nor to the residual stream (the release adds its timestep embedding to that position embedding, so
  time reaches the attention weights only);
- the decoder starts from zeros; the learned queries enter as the decoder's query positions;
- the encoder ends without a norm; the decoder's outputs, one per layer, pass through one shared
  final ``LayerNorm`` (DETR's ``return_intermediate``).

Module and attribute names (``encoder.layers.i.self_attn``, ``linear1``, ``norm3``, ``decoder.norm``)
are the release's, so its weights load with ``strict=True``. Tensors are batch-first here; the
release runs sequence-first, which changes no weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncoderLayer(nn.Module):
    """x <- norm1(x + SelfAttn(q=k=x+pos, v=x)); x <- norm2(x + FFN(x))."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ffn)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, S, d), pos (B, S, d) -> (B, S, d)."""
        qk = x + pos
        x = self.norm1(x + self.dropout(self.self_attn(qk, qk, x, need_weights=False)[0]))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class DecoderLayer(nn.Module):
    """y <- norm1(y + SelfAttn(q=k=y+qpos, v=y)); y <- norm2(y + CrossAttn(q=y+qpos, k=mem+pos, v=mem));
    y <- norm3(y + FFN(y))."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ffn)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """y (B, N, d), memory (B, S, d), pos (B, S, d), query_pos (B or 1, N, d) -> (B, N, d)."""
        qk = y + query_pos
        y = self.norm1(y + self.dropout(self.self_attn(qk, qk, y, need_weights=False)[0]))
        attended = self.multihead_attn(y + query_pos, memory + pos, memory, need_weights=False)[0]
        y = self.norm2(y + self.dropout(attended))
        return self.norm3(y + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(y))))))


class Encoder(nn.Module):
    def __init__(self, layers: int, *args):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(*args) for _ in range(layers))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x  # post-norm: no final norm


class Decoder(nn.Module):
    def __init__(self, layers: int, d_model: int, *args):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, *args) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, memory: torch.Tensor, pos: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """memory (B, S, d), pos (B, S, d), queries (N, d) -> every layer's normed output (L, B, N, d)."""
        query_pos = queries[None]
        y = torch.zeros(memory.shape[0], *queries.shape, dtype=memory.dtype, device=memory.device)
        outputs = []
        for layer in self.layers:
            y = layer(y, memory, pos, query_pos)
            outputs.append(self.norm(y))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """tokens (B, S, d) + pos (B, S, d), queries (N, d) -> decoder outputs (L_dec, B, N, d)."""

    def __init__(self, d_model: int, heads: int, ffn: int, encoder_layers: int, decoder_layers: int, dropout: float):
        super().__init__()
        self.encoder = Encoder(encoder_layers, d_model, heads, ffn, dropout)
        self.decoder = Decoder(decoder_layers, d_model, heads, ffn, dropout)
        for p in self.parameters():  # DETR's initialisation (weights of a converted checkpoint replace it)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(tokens, pos), pos, queries)
