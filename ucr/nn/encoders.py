"""The K component encoders: unshared 1-D conv stacks, run together as grouped convolutions.

Each encoder maps the mixture latent ``[B, C, T]`` to one component latent ``z_k [B, C_out, T]`` at full frame rate
(the paper: 128 -> 256 -> 512 -> 1, kernel 3, stride 1, SiLU between layers, no normalisation, no output activation).
All K stacks run in one call: the first layer is a single conv ``C -> K * hidden[0]`` (K separate convs reading the
same input are exactly one conv with K times the outputs, so the input need not be repeated); every later layer is a
grouped conv with ``groups = K``. Output channels of every layer are laid out component-major: rows
``k * width : (k + 1) * width`` of each weight belong to encoder k.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ComponentEncoders(nn.Module):
    """``forward(x [B, C, T]) -> z [B, K, C_out, T]``, K independent conv stacks ``C -> *hidden -> C_out``."""

    def __init__(self, in_channels: int, n_components: int, hidden: Sequence[int] = (256, 512),
                 out_channels: int = 1, input_masks: torch.Tensor | None = None):
        """``input_masks [K, in_channels]`` (0 / 1, optional): encoder k reads only the input channels where row k is
        1 (its first layer's weights on the others are held at 0)."""
        super().__init__()
        hidden = tuple(hidden)
        if in_channels < 1 or n_components < 1 or out_channels < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"ComponentEncoders needs positive sizes, got in_channels={in_channels}, "
                             f"n_components={n_components}, hidden={list(hidden)}, out_channels={out_channels}")
        self.in_channels, self.n_components, self.out_channels = in_channels, n_components, out_channels
        K = n_components
        widths = (in_channels, *hidden, out_channels)
        self.layers = nn.ModuleList()
        for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i == 0:  # shared input: one ungrouped conv == K convs side by side
                self.layers.append(nn.Conv1d(width_in, K * width_out, 3, padding=1))
            else:
                self.layers.append(nn.Conv1d(K * width_in, K * width_out, 3, padding=1, groups=K))
        if input_masks is not None:
            if input_masks.shape != (K, in_channels):
                raise ValueError(f"input_masks must be [{K}, {in_channels}], got {tuple(input_masks.shape)}")
            first = widths[1]  # rows k * first : (k + 1) * first of the first layer belong to encoder k
            self.register_buffer("first_layer_mask", input_masks.float().repeat_interleave(first, dim=0)[:, :, None],
                                 persistent=False)  # [K * first, C, 1]; rebuilt from the config, not saved
        else:
            self.first_layer_mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"ComponentEncoders expects [B, {self.in_channels}, T], got shape {tuple(x.shape)}")
        B, C, T = x.shape
        h = x
        for i, layer in enumerate(self.layers):
            if i == 0 and self.first_layer_mask is not None:
                h = F.conv1d(h, layer.weight * self.first_layer_mask, layer.bias, padding=1)
            else:
                h = layer(h)  # [B, K * width_i, T]
            if i < len(self.layers) - 1:
                h = F.silu(h)
        return h.view(B, self.n_components, self.out_channels, T)  # [B, K * C_out, T] -> [B, K, C_out, T]
