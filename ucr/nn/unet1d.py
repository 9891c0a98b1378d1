"""A 1-D U-Net over latent sequences, conditioned on a noise level and (optionally) a side sequence.

This is the paper's shared decoder (and, with other widths, its masked prior): ``x [B, C_in, T]`` is the noisy
latent at IADB blending factor ``alpha [B]``; ``cond [B, C_cond, T]`` is a component latent ``z_k`` (decoder) or the
component mask (prior). The network predicts the clean latent ``[B, C_out, T]``; it never sees the noise schedule.

Layout, with ``n = len(channels)`` levels and stride-2 resampling between them::

    input conv C_in -> channels[0]
    down:   level 0 .. n-2: residual blocks at channels[i], keep a skip, stride-2 conv
    middle: level n-1:      2 * blocks_per_level residual blocks at channels[n-1]
    up:     level n-2 .. 0: nearest x2 + conv, concatenate the skip, residual blocks at channels[i]
    output: GroupNorm, SiLU, conv channels[0] -> C_out

Self-attention follows every residual block of the levels in ``attention_levels`` (the paper: the deepest only).
Each residual block receives the noise embedding by FiLM (scale and shift) and the condition, resized to the block's
time resolution, through its own ``Conv1d(C_cond, C_cond, 1) + SiLU``, concatenated before its first conv.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ucr.nn.embeddings import NoiseLevelEmbedding


class ResidualBlock(nn.Module):
    """``h [B, C_in, T]`` -> ``[B, C_out, T]`` with FiLM from ``emb [B, E]`` and optional ``cond [B, C_cond, T]``.

    GroupNorm, SiLU, [concat cond], conv3, GroupNorm, FiLM (x (1 + scale) + shift), SiLU, dropout, conv3; plus a
    1x1 shortcut when the widths differ. FiLM acts on the normalised activations (the "scale-shift norm" form), so the
    second GroupNorm cannot undo it.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, cond_channels: int = 0,
                 dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.cond_channels = cond_channels
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.cond_proj = nn.Conv1d(cond_channels, cond_channels, 1) if cond_channels else None
        self.conv1 = nn.Conv1d(in_channels + cond_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, C, T = h.shape
        x = F.silu(self.norm1(h))
        if self.cond_proj is not None:
            assert cond is not None and cond.shape == (B, self.cond_channels, T), "cond missing or mis-sized"
            x = torch.cat([x, F.silu(self.cond_proj(cond))], dim=1)  # [B, C + C_cond, T]
        x = self.conv1(x)  # [B, C_out, T]
        scale, shift = self.film(F.silu(emb))[:, :, None].chunk(2, dim=1)  # each [B, C_out, 1]
        x = self.norm2(x) * (1 + scale) + shift
        x = self.conv2(self.dropout(F.silu(x)))
        return self.shortcut(h) + x


class SelfAttention1d(nn.Module):
    """Multi-head self-attention over time with a residual connection: ``[B, C, T]`` -> ``[B, C, T]``."""

    def __init__(self, channels: int, heads: int, groups: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} must be divisible by attention_heads = {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, C, T = h.shape
        H = self.heads
        qkv = self.qkv(self.norm(h)).view(B, 3, H, C // H, T)  # [B, 3, H, D, T]
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each [B, H, T, D]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, D]
        out = out.transpose(-1, -2).reshape(B, C, T)  # [B, H, D, T] -> [B, C, T]
        return h + self.proj(out)


class UNetLevel(nn.Module):
    """Residual blocks (each optionally followed by self-attention) at one time resolution."""

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, embedding_dim: int, cond_channels: int,
                 dropout: float, groups: int, attention_heads: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualBlock(in_channels if i == 0 else out_channels, out_channels, embedding_dim, cond_channels,
                          dropout, groups)
            for i in range(n_blocks))
        self.attentions = nn.ModuleList(
            SelfAttention1d(out_channels, attention_heads, groups) if attention_heads else nn.Identity()
            for _ in range(n_blocks))

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        for block, attention in zip(self.blocks, self.attentions):
            h = attention(block(h, emb, cond))
        return h


class Downsample1d(nn.Module):
    """Stride-2 conv: ``[B, C, T]`` -> ``[B, C, T / 2]`` (T even)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h)


class Upsample1d(nn.Module):
    """Nearest-neighbour x2 then a conv: ``[B, C, T]`` -> ``[B, C, 2 T]`` (no checkerboard of ConvTranspose)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class UNet1d(nn.Module):
    """``forward(x [B, C_in, T], alpha [B], cond [B, C_cond, T] | None) -> [B, C_out, T]``.

    ``T`` must be a multiple of ``2 ** (len(channels) - 1)``. ``cond`` is required iff ``cond_channels > 0``.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int] = (128, 128, 256, 256, 512),
                 blocks_per_level: int = 1, attention_levels: Sequence[int] = (4,), attention_heads: int = 4,
                 embedding_dim: int = 128, cond_channels: int = 0, dropout: float = 0.1, groups: int = 8):
        super().__init__()
        channels = tuple(channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive widths, got {list(channels)}")
        if in_channels < 1 or out_channels < 1 or cond_channels < 0 or blocks_per_level < 1:
            raise ValueError(f"need in_channels, out_channels, blocks_per_level >= 1 and cond_channels >= 0, got "
                             f"{in_channels}, {out_channels}, {blocks_per_level}, {cond_channels}")
        if any(c % groups for c in channels):
            raise ValueError(f"channels {list(channels)} must all be divisible by groups = {groups}")
        n = len(channels)
        bad_levels = [level for level in attention_levels if not 0 <= level < n]
        if bad_levels:
            raise ValueError(f"attention_levels {bad_levels} out of range; levels are 0..{n - 1}")
        self.in_channels, self.out_channels, self.cond_channels = in_channels, out_channels, cond_channels
        self.channels = channels
        self.downsample_factor = 2 ** (n - 1)

        def level(i: int, in_width: int, n_blocks: int) -> UNetLevel:
            heads = attention_heads if i in attention_levels else 0
            return UNetLevel(in_width, channels[i], n_blocks, embedding_dim, cond_channels, dropout, groups, heads)

        self.embed = NoiseLevelEmbedding(embedding_dim)
        self.input_conv = nn.Conv1d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList(level(i, channels[max(i - 1, 0)], blocks_per_level) for i in range(n - 1))
        self.downsamplers = nn.ModuleList(Downsample1d(channels[i]) for i in range(n - 1))
        self.middle = level(n - 1, channels[max(n - 2, 0)], 2 * blocks_per_level)
        # up[i] and upsamplers[i] serve level i (0..n-2); they run from the deepest to level 0
        self.upsamplers = nn.ModuleList(Upsample1d(channels[i + 1]) for i in range(n - 1))
        self.up = nn.ModuleList(level(i, channels[i + 1] + channels[i], blocks_per_level) for i in range(n - 1))
        self.output = nn.Sequential(nn.GroupNorm(groups, channels[0]), nn.SiLU(),
                                    nn.Conv1d(channels[0], out_channels, 3, padding=1))

    def _check_inputs(self, x: torch.Tensor, alpha: torch.Tensor, cond: torch.Tensor | None) -> None:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, T], got shape {tuple(x.shape)}")
        B, _, T = x.shape
        if T == 0 or T % self.downsample_factor:
            raise ValueError(f"sequence length T = {T} must be a positive multiple of {self.downsample_factor} "
                             f"(2 ** (len(channels) - 1) for channels {list(self.channels)})")
        if alpha.shape != (B,):
            raise ValueError(f"alpha must be [B] = [{B}], got shape {tuple(alpha.shape)}")
        if self.cond_channels:
            if cond is None or cond.shape != (B, self.cond_channels, T):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must be [B, {self.cond_channels}, T] = [{B}, {self.cond_channels}, {T}], "
                                 f"got {got}")
        elif cond is not None:
            raise ValueError("this UNet1d has cond_channels = 0 but a cond was given")

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, alpha, cond)
        B, C, T = x.shape
        n = len(self.channels)
        emb = self.embed(alpha)  # [B, E]
        # the condition at every resolution: average-pool to T / 2**i (exact for power-of-two factors)
        conds: list[torch.Tensor | None] = [None] * n
        if cond is not None:
            conds = [cond if i == 0 else F.adaptive_avg_pool1d(cond, T >> i) for i in range(n)]  # [B, C_cond, T/2^i]

        h = self.input_conv(x)  # [B, channels[0], T]
        skips = []
        for i in range(n - 1):
            h = self.down[i](h, emb, conds[i])  # [B, channels[i], T / 2^i]
            skips.append(h)
            h = self.downsamplers[i](h)  # [B, channels[i], T / 2^(i+1)]
        h = self.middle(h, emb, conds[n - 1])  # [B, channels[n-1], T / 2^(n-1)]
        for i in reversed(range(n - 1)):
            h = self.upsamplers[i](h)  # [B, channels[i+1], T / 2^i]
            h = torch.cat([h, skips.pop()], dim=1)  # [B, channels[i+1] + channels[i], T / 2^i]
            h = self.up[i](h, emb, conds[i])  # [B, channels[i], T / 2^i]
        return self.output(h)  # [B, C_out, T]
