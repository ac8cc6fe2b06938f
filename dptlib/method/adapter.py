"""The discriminative adapter (Eq. 2): a DETR-like transformer on a U-Net feature map.

    F_t (B, C, h, w) --1x1 conv--> (B, d, h, w) + position embedding + timestep embedding
        --flatten--> (B, hw, d) --Enc--> memory --Dec(queries Q)--> Q* (B, N, d)

The first M of the N query outputs serve global matching (projected to the text-embedding width,
h_i = g(q*_i; W_m)); the other N - M are object queries for local grounding, each with a grounding
logit (W_p), a box (W_b; cx, cy, w, h in [0, 1]) and a semantic embedding (W_s). Several probed
blocks are fused by adding their projected, resized maps (Tab. 6).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors.torch import load_file, save_file
from torch import nn

INPUT_NORMS = ("none", "batch", "whiten")


@dataclass
class AdapterConfig:
    """App. B.3.2 defaults: 1 encoder + 1 decoder layer, d = 256, 8 heads, FFN 2048, N = 110, M = 10."""

    d_model: int = 256
    heads: int = 8
    ffn: int = 2048
    encoder_layers: int = 1
    decoder_layers: int = 1
    num_queries: int = 110
    num_matching_queries: int = 10
    position_embedding: str = "learned"  # "learned" (the paper) or "sine" (the release's: DETR's normalised 2-D sine)
    max_positions: int = 64  # learned embeddings cover feature maps up to this side
    fusion_size: int | None = None  # side the probed maps are resized to before adding; None: the first block's
    max_side: int | None = None  # maps larger than this are first resized down to it (fewer tokens); None: no limit
    dropout: float = 0.1
    temperature: float = 0.07  # initial tau of Eq. 3, 4, 6 (learnable)
    # "batch": standardise each channel of each probed map (BatchNorm without affine parameters)
    # before the 1x1 projection; "whiten": decorrelate the channels as well (ChannelWhitening).
    # Not in the paper, whose projection takes the raw map; a diagnostic for blocks whose maps are
    # offset, small or dominated by a few directions (04_ablation_blocks). Left out of repr so that the
    # stage-1 keys of runs made before it existed stay valid (ablation_variant adds it when set).
    input_norm: str = field(default="none", repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.encoder_layers <= 5 or not 1 <= self.decoder_layers <= 5:
            raise ValueError("encoder_layers and decoder_layers must be in 1..5")
        if not 0 < self.num_matching_queries < self.num_queries:
            raise ValueError("need 0 < num_matching_queries < num_queries")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}; got {self.input_norm!r}")
        if self.position_embedding not in ("learned", "sine"):
            raise ValueError(f"position_embedding must be 'learned' or 'sine', got {self.position_embedding!r}")
        if self.d_model % self.heads or self.d_model % 4:
            raise ValueError("d_model must be divisible by heads and by 4")


@dataclass
class AdapterOutput:
    """match_embeddings (B, M, D_text); grounding_logits (B, K); boxes (B, K, 4) as (cx, cy, w, h)
    in [0, 1]; semantic_embeddings (B, K, D_text), with K = N - M object queries."""

    match_embeddings: torch.Tensor
    grounding_logits: torch.Tensor
    boxes: torch.Tensor
    semantic_embeddings: torch.Tensor


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of diffusion timesteps (B,), cos first, as in the SD U-Net:
    diffusers' ``get_timestep_embedding`` (``flip_sin_to_cos=True``, no frequency shift)."""
    return get_timestep_embedding(timesteps, dim, flip_sin_to_cos=True, downscale_freq_shift=0, max_period=max_period)


def normalized_sine_embedding(h: int, w: int, dim: int, device=None, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's ``PositionEmbeddingSine(dim / 2, normalize=True)`` of an unpadded h x w map, (h * w, dim).

    Row r (and column c) is the coordinate (r + 1) / h * 2 pi; channel k of its dim / 2 encodes it
    at frequency temperature^(-2 floor(k / 2) / (dim / 2)), with sin on even k and cos on odd k. The
    first dim / 2 channels hold y, the rest x.
    """
    feats = dim // 2
    k = torch.arange(feats, device=device, dtype=torch.float32)
    periods = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / feats)  # (dim / 2,)

    def encode(n: int) -> torch.Tensor:  # (n, dim / 2)
        coords = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1e-6) * (2 * math.pi)
        angles = coords[:, None] / periods
        return torch.where(k.remainder(2) == 0, angles.sin(), angles.cos())

    y, x = encode(h), encode(w)
    return torch.cat([y[:, None, :].expand(h, w, feats), x[None, :, :].expand(h, w, feats)], -1).reshape(h * w, dim)


class ChannelWhitening(nn.Module):
    """ZCA whitening of a map's channels, (F - mu) Sigma^(-1/2), with the mean and covariance taken
    over the batch and the positions (running estimates in eval mode, as BatchNorm keeps them).

    (B, C, h, w) -> (B, C, h, w) whose channels have mean 0 and covariance I over the batch. The
    statistics are detached: gradients flow through the (affine) transform, not into its estimate.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_cov", torch.eye(channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, h, w = features.shape
        rows = features.permute(0, 2, 3, 1).reshape(-1, channels)  # (B h w, C)
        with torch.no_grad():
            if self.training:
                mean, cov = rows.mean(0), torch.cov(rows.T)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_cov.lerp_(cov, self.momentum)
            else:
                mean, cov = self.running_mean, self.running_cov
            values, vectors = torch.linalg.eigh(cov + self.eps * torch.eye(channels, device=cov.device, dtype=cov.dtype))
            whitening = vectors @ torch.diag(values.clamp_min(self.eps).rsqrt()) @ vectors.T  # Sigma^(-1/2), symmetric
        return ((rows - mean) @ whitening).reshape(batch, h, w, channels).permute(0, 3, 1, 2)


ADAPTER_FILE = "adapter.safetensors"  # the weights' file in an adapter folder (config.json beside it)


class AdapterHubMixin(PyTorchModelHubMixin):
    """``huggingface_hub``'s ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for an adapter
    module: ``config.json`` holds its constructor's arguments (``self._hub_mixin_config``, JSON),
    ``adapter.safetensors`` its weights, loaded strictly."""

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: the weights as ``adapter.safetensors`` (the name every adapter folder uses)."""
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, Path(save_directory) / ADAPTER_FILE)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool, local_files_only: bool,
                         token, map_location: str = "cpu", strict: bool = True, **model_kwargs):
        """The mixin's hook: build from ``config.json``'s arguments, then load ``adapter.safetensors``
        strictly (every weight present, none left over) from the folder or the hub."""
        adapter = cls(**model_kwargs)
        path = Path(model_id) / ADAPTER_FILE if Path(model_id).is_dir() else hf_hub_download(
            repo_id=model_id, filename=ADAPTER_FILE, revision=revision, cache_dir=cache_dir, force_download=force_download,
            token=token, local_files_only=local_files_only)
        adapter.load_state_dict(load_file(path, device=str(map_location)), strict=strict)
        return adapter.eval()



class DiscriminativeAdapter(nn.Module, AdapterHubMixin, library_name="dptlib", tags=["dpt", "text-to-image", "discriminative-adapter"]):
    """f(F; W_a, Q) of Eq. 2 with the matching and grounding heads g(.; W_m / W_p / W_b / W_s).

    ``in_channels``: channels of each probed block's map; ``text_dim``: width of the CLIP text
    embedding the matching and semantic heads project to. ``save_pretrained(folder)`` /
    ``from_pretrained(folder or hub id)`` / ``push_to_hub(repo)`` (``huggingface_hub``'s mixin) write
    and read ``config.json`` (the three arguments) and ``adapter.safetensors``.
    """

    def __init__(self, config: AdapterConfig | dict, in_channels: list[int], text_dim: int):
        super().__init__()
        config = config if isinstance(config, AdapterConfig) else AdapterConfig(**config)
        self._hub_mixin_config = {"config": asdict(config), "in_channels": [int(c) for c in in_channels], "text_dim": int(text_dim)}
        self.config = config
        d = config.d_model
        norm = {"batch": lambda c: nn.BatchNorm2d(c, affine=False), "whiten": ChannelWhitening}.get(config.input_norm)
        self.input_norms = nn.ModuleList(norm(c) for c in in_channels) if norm else None
        self.input_projections = nn.ModuleList(nn.Conv2d(c, d, kernel_size=1) for c in in_channels)
        if config.position_embedding == "learned":  # DETR's learned row + column embeddings
            self.row_embedding = nn.Embedding(config.max_positions, d // 2)
            self.column_embedding = nn.Embedding(config.max_positions, d // 2)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, config.heads, config.ffn, config.dropout, batch_first=True),
            config.encoder_layers, enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, config.heads, config.ffn, config.dropout, batch_first=True), config.decoder_layers
        )
        self.queries = nn.Embedding(config.num_queries, d)
        self.match_head = nn.Linear(d, text_dim)  # W_m
        self.grounding_head = nn.Linear(d, 1)  # W_p
        self.box_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))  # W_b
        self.semantic_head = nn.Linear(d, text_dim)  # W_s
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.temperature)))  # 1 / tau

    def position_embedding(self, h: int, w: int, device) -> torch.Tensor:
        """(h * w, d) position embedding of an h x w map."""
        if self.config.position_embedding == "sine":
            return normalized_sine_embedding(h, w, self.config.d_model, device)
        if max(h, w) > self.config.max_positions:
            raise ValueError(f"feature map {h}x{w} is larger than max_positions={self.config.max_positions}")
        rows = self.row_embedding(torch.arange(h, device=device))[:, None, :].expand(h, w, -1)
        cols = self.column_embedding(torch.arange(w, device=device))[None, :, :].expand(h, w, -1)
        return torch.cat([rows, cols], -1).reshape(h * w, -1)

    def forward(self, features: list[torch.Tensor], timesteps: torch.Tensor) -> AdapterOutput:
        """features: one (B, C_l, h_l, w_l) map per probed block; timesteps (B,)."""
        if len(features) != len(self.input_projections):
            raise ValueError(f"expected {len(self.input_projections)} feature maps, got {len(features)}")
        # a U-Net in half precision (bf16 / fp16 weights) hands over half-precision maps; the adapter
        # keeps its own dtype (under autocast the layers still run in the autocast dtype)
        features = [f.to(self.queries.weight.dtype) for f in features]
        if self.input_norms is not None:  # (F - mean) / std per channel, or whitened
            features = [n(f) for n, f in zip(self.input_norms, features)]
        size = (self.config.fusion_size,) * 2 if self.config.fusion_size else tuple(features[0].shape[-2:])
        if self.config.max_side and max(size) > self.config.max_side:
            size = (self.config.max_side,) * 2
        # resize, then project: both are linear and per-pixel / per-channel, so the order does not
        # change the result, and projecting the smaller map is cheaper
        fused = sum(
            p(F.interpolate(f, size=size, mode="bilinear", align_corners=False) if tuple(f.shape[-2:]) != size else f)
            for p, f in zip(self.input_projections, features)
        )  # (B, d, h, w)
        batch, d, h, w = fused.shape
        tokens = fused.flatten(2).transpose(1, 2)  # (B, hw, d)
        tokens = tokens + self.position_embedding(h, w, tokens.device)[None]
        tokens = tokens + self.time_mlp(timestep_embedding(timesteps.to(tokens.device).expand(batch), d))[:, None, :]
        memory = self.encoder(tokens)  # (B, hw, d)
        queries = self.decoder(self.queries.weight[None].expand(batch, -1, -1), memory)  # (B, N, d)
        m = self.config.num_matching_queries
        matching, objects = queries[:, :m], queries[:, m:]
        return AdapterOutput(
            match_embeddings=self.match_head(matching),
            grounding_logits=self.grounding_head(objects).squeeze(-1),
            boxes=self.box_head(objects).sigmoid(),
            semantic_embeddings=self.semantic_head(objects),
        )
