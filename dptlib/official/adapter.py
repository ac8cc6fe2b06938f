"""The adapter of the official release (LgQu/DPT-T2I), as an architecture variant "official".

    F (B, C, h, w) --input_proj (1x1 conv)--> (B, d, h, w) --flatten--> tokens (B, hw, d)
    pos = normalised 2-D sine embedding (hw, d) + timestep embedding (B, d)   (queries / keys only)
    Transformer(tokens, pos, query_embed (N, d)) -> Q* (L_dec, B, N, d)
    matching:  h_i = map_to_clip(Q*[0, :, i]),  i < M          (Linear-ReLU-Linear to the text width)
    grounding: class_embed / bbox_embed on Q*[-1, :, M:]      (MDETR's heads)

Where it departs from the paper's adapter (:class:`dptlib.method.adapter.DiscriminativeAdapter`), as the
release does:

- time enters through the position embedding, so only the attention weights see it: diffusers'
  ``Timesteps(d, flip_sin_to_cos=True, downscale_freq_shift=0)`` -> Linear(d, 4d) -> SiLU ->
  Linear(4d, d), added to the fixed sine positions (:mod:`dptlib.official.transformer`);
- the matching embeddings are read from the **first** decoder layer's (normed) output, the index
  the release's training and self-correction use (``q_emb[0]``); the grounding heads read the last
  layer's. With the release's single decoder layer the two are the same;
- grounding is MDETR's: ``class_embed`` scores each object query over 255 token positions + "no
  object", ``bbox_embed`` is a 3-layer MLP to (cx, cy, w, h), and the contrastive alignment
  projects queries (``contrastive_align_projection_image``) and the tokens of a frozen RoBERTa-base
  (``contrastive_align_projection_text``) to 64-d. There is no semantic head W_s.

Supported here: matching and boxes, exactly; the class logits; the queries' 64-d alignment
embeddings. Not supported: the token side of the alignment, which needs RoBERTa-base and its
tokenizer (another model to download, used by no score of this repo); its projection's weights are
kept, unused, so the converted state dict is the release's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from dptlib.method.adapter import AdapterHubMixin, AdapterOutput, normalized_sine_embedding
from dptlib.official.transformer import Transformer


@dataclass
class OfficialAdapterConfig:
    """The release's defaults: SD-2.1-base ``up1`` (1280 channels), d 256, 8 heads, FFN 2048, 1 + 1
    layers, 10 matching + 100 grounding queries, CLIP width 1024, MDETR's 255 classes, 64-d alignment."""

    d_model: int = 256
    heads: int = 8
    ffn: int = 2048
    encoder_layers: int = 1
    decoder_layers: int = 1
    num_queries: int = 110
    num_matching_queries: int = 10
    in_channels: int = 1280
    text_dim: int = 1024
    time_hidden: int = 1024  # the timestep MLP's width: 4 d in the release
    num_classes: int = 255  # class_embed has num_classes + 1 outputs (the last: "no object")
    align_dim: int = 64  # 0: no contrastive alignment projections
    roberta_dim: int = 768
    dropout: float = 0.1
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        if self.d_model % 4:
            raise ValueError(f"d_model={self.d_model}: the 2-D sine embedding needs a multiple of 4")
        if not 0 < self.num_matching_queries < self.num_queries:
            raise ValueError(f"need 0 < num_matching_queries ({self.num_matching_queries}) < num_queries ({self.num_queries})")
        if self.encoder_layers < 1 or self.decoder_layers < 1:
            raise ValueError("the release's transformer has at least one encoder and one decoder layer")


@dataclass
class OfficialAdapterOutput(AdapterOutput):
    """:class:`AdapterOutput` with MDETR's grounding outputs; K = N - M object queries.

    ``grounding_logits`` (B, K) is log(p_object / p_no-object) from the class logits, so its sigmoid
    is MDETR's REC score 1 - p(no object) and its argmax is MDETR's chosen query;
    ``semantic_embeddings`` is (B, K, 0): the release has no W_s.
    class_logits (B, K, num_classes + 1); align_embeddings (B, K, align_dim), L2-normalised, or None.
    """

    class_logits: torch.Tensor | None = None
    align_embeddings: torch.Tensor | None = None


class TimestepEncoding(nn.Module):
    """t (B,) -> (B, d): sinusoid (cos first) -> Linear -> SiLU -> Linear; the release's module names."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.time_proj = Timesteps(d_model, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(d_model, hidden, out_dim=d_model)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.time_embedding(self.time_proj(timesteps).to(self.time_embedding.linear_1.weight.dtype))


class BoxMLP(nn.Module):
    """DETR's box head: 3 linear layers, ReLU between, (.., d) -> (.., 4) logits (sigmoid outside)."""

    def __init__(self, d_model: int, layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d_model, 4 if i == layers - 1 else d_model) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class OfficialAdapter(nn.Module, AdapterHubMixin, library_name="dptlib", tags=["dpt", "text-to-image", "discriminative-adapter"]):
    """The release's adapter (``DiffQformerCombined`` without its U-Net and RoBERTa), one probed block.

    Parameter names are the release's checkpoint keys less the U-Net's LoRA, so
    ``load_state_dict(strict=True)`` takes the converted weights as they are.
    ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``: :class:`dptlib.method.adapter.AdapterHubMixin`.
    """

    def __init__(self, config: OfficialAdapterConfig | dict):
        super().__init__()
        config = config if isinstance(config, OfficialAdapterConfig) else OfficialAdapterConfig(**config)
        self._hub_mixin_config = {"config": asdict(config)}
        self.config = c = config
        self.transformer = Transformer(c.d_model, c.heads, c.ffn, c.encoder_layers, c.decoder_layers, c.dropout)
        self.query_embed = nn.Embedding(c.num_queries, c.d_model)
        self.input_proj = nn.Conv2d(c.in_channels, c.d_model, kernel_size=1)
        self.timestep_embedding = TimestepEncoding(c.d_model, c.time_hidden)
        self.map_to_clip = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.ReLU(), nn.Linear(c.d_model, c.text_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / c.temperature)))
        self.class_embed = nn.Linear(c.d_model, c.num_classes + 1)
        self.bbox_embed = BoxMLP(c.d_model)
        if c.align_dim:
            self.contrastive_align_projection_image = nn.Linear(c.d_model, c.align_dim)
            self.contrastive_align_projection_text = nn.Linear(c.roberta_dim, c.align_dim)  # kept, unused: see the module docstring

    def queries(self, features: list[torch.Tensor], timesteps: torch.Tensor) -> torch.Tensor:
        """features: [one (B, C, h, w) map]; timesteps (B,) or a scalar -> Q* (L_dec, B, N, d)."""
        if len(features) != 1:
            raise ValueError(f"the official adapter reads one feature map (up1), got {len(features)}")
        src = self.input_proj(features[0])  # (B, d, h, w)
        batch, d, h, w = src.shape
        tokens = src.flatten(2).transpose(1, 2)  # (B, hw, d)
        time = self.timestep_embedding(timesteps.to(src.device).reshape(-1).expand(batch))  # (B, d)
        pos = normalized_sine_embedding(h, w, d, src.device).to(src.dtype)[None] + time[:, None, :]  # (B, hw, d)
        return self.transformer(tokens, pos, self.query_embed.weight)

    def forward(self, features: list[torch.Tensor], timesteps: torch.Tensor) -> OfficialAdapterOutput:
        hs = self.queries(features, timesteps)
        m = self.config.num_matching_queries
        objects = hs[-1, :, m:]  # (B, K, d)
        class_logits = self.class_embed(objects)
        align = None
        if self.config.align_dim:
            align = F.normalize(self.contrastive_align_projection_image(objects), dim=-1)
        return OfficialAdapterOutput(
            match_embeddings=self.map_to_clip(hs[0, :, :m]),  # (B, M, D_text)
            grounding_logits=torch.logsumexp(class_logits[..., :-1], -1) - class_logits[..., -1],
            boxes=self.bbox_embed(objects).sigmoid(),
            semantic_embeddings=objects.new_zeros(*objects.shape[:2], 0),
            class_logits=class_logits,
            align_embeddings=align,
        )
