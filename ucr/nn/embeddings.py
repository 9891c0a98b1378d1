"""Noise-level embeddings: the IADB blending factor alpha in [0, 1] as a vector the network can use.

As in the paper, alpha is scaled by 1000 before the sinusoidal features, so that the usual frequency range
(periods from 2*pi to 2*pi*10000) resolves the [0, 1] interval finely.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """``alpha [B]`` -> ``[B, dim]``: ``[sin(1000 alpha f_i), cos(1000 alpha f_i)]`` with geometric ``f_i``."""

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"SinusoidalEmbedding dim must be an even integer >= 2, got {dim}")
        self.dim = dim
        self.scale = scale
        half = dim // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)  # [dim/2]
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        if alpha.ndim != 1:
            raise ValueError(f"noise level must be a vector alpha [B], got shape {tuple(alpha.shape)}")
        angles = self.scale * alpha.float()[:, None] * self.frequencies[None, :]  # [B, dim/2]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # [B, dim]


class NoiseLevelEmbedding(nn.Module):
    """``alpha [B]`` -> ``[B, dim]``: sinusoidal features followed by a two-layer MLP (Linear, SiLU, Linear)."""

    def __init__(self, dim: int):
        super().__init__()
        self.sinusoidal = SinusoidalEmbedding(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoidal(alpha))  # [B, dim]
