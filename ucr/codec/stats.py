"""Per-channel latent normalisation statistics, computed from data and stored with what uses them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class LatentStats:
    """Per-channel mean and standard deviation of latents ``[C]`` (stored as lists so they serialise)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> "LatentStats":
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def from_latents(cls, latents: Iterable[torch.Tensor], min_std: float = 1e-5) -> "LatentStats":
        """Streaming statistics over an iterable of ``[B, C, T]`` (or ``[C, T]``) tensors (float64 sums)."""
        total = None
        total_sq = None
        count = 0
        for latent in latents:
            latent = latent.detach().double()
            if latent.ndim == 2:
                latent = latent[None]
            if latent.ndim != 3:
                raise ValueError(f"expected latents [B, C, T], got shape {tuple(latent.shape)}")
            per_channel = latent.transpose(0, 1).reshape(latent.shape[1], -1)  # [C, B*T]
            total = per_channel.sum(1) if total is None else total + per_channel.sum(1)
            total_sq = per_channel.square().sum(1) if total_sq is None else total_sq + per_channel.square().sum(1)
            count += per_channel.shape[1]
        if not count:
            raise ValueError("cannot compute latent statistics from no data")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(min_std)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def pooled(self) -> "LatentStats":
        """One mean and std over all channels (each channel weighted equally, as each holds as many frames),
        repeated per channel: ``mean = mean_c(m_c)``, ``var = mean_c(s_c^2 + m_c^2) - mean^2``."""
        mean = torch.tensor(self.mean, dtype=torch.float64)
        std = torch.tensor(self.std, dtype=torch.float64)
        pooled_mean = mean.mean()
        pooled_std = ((std.square() + mean.square()).mean() - pooled_mean.square()).clamp_min(0).sqrt()
        return LatentStats((float(pooled_mean),) * self.channels, (float(pooled_std),) * self.channels)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if like.ndim < 2 or like.shape[-2] != self.channels:
            raise ValueError(f"latent has {like.shape[-2] if like.ndim >= 2 else '?'} channels, statistics have "
                             f"{self.channels}")
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device)[:, None]
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device)[:, None]
        return mean, std

    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        """``[..., C, T]`` -> standardised per channel."""
        mean, std = self._tensors(latent)
        return (latent - mean) / std

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._tensors(latent)
        return latent * std + mean

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "LatentStats":
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))
