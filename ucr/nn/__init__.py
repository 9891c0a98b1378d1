"""Network building blocks: noise-level embeddings, the 1-D U-Net, the component encoders.

Modules here take plain keyword arguments (builders map config to them) and know nothing about diffusion schedules.
"""

from __future__ import annotations

from torch import nn

from ucr.nn.embeddings import NoiseLevelEmbedding, SinusoidalEmbedding
from ucr.nn.encoders import ComponentEncoders
from ucr.nn.unet1d import UNet1d


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["ComponentEncoders", "NoiseLevelEmbedding", "SinusoidalEmbedding", "UNet1d", "count_parameters"]
