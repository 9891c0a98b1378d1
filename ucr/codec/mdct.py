"""An exact, linear, critically sampled codec: the circular MDCT at EnCodec's 24 kHz / 75 Hz framing.

Frame ``t`` windows samples ``[t*N - N/2, t*N + 3N/2)`` (N = hop = 320) with a sine window and takes N MDCT
coefficients, so T = L / N frames give exactly L numbers (critical sampling). With the sine window (Princen-Bradley
condition) and orthonormal scaling, the lapped transform is orthogonal: decoding is the transpose, reconstruction is
perfect to float precision (time-domain aliasing cancellation), energy is preserved, and sums of sources map to sums
of latents. The signal is treated as periodic so no extra edge frames are needed.

Latent: ``[B, C=N, T]`` — channel ``k`` is the frequency band ``(k + 1/2) * sr / (2N)``.
"""

from __future__ import annotations

import math

import torch

from ucr.codec.base import LatentCodec


class MDCTCodec(LatentCodec):
    def __init__(self, sample_rate: int = 24000, hop_length: int = 320) -> None:
        if hop_length % 2:
            raise ValueError(f"MDCT hop_length must be even, got {hop_length}")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.channels = hop_length
        n = hop_length
        time = torch.arange(2 * n, dtype=torch.float64)
        freq = torch.arange(n, dtype=torch.float64)
        window = torch.sin(math.pi * (time + 0.5) / (2 * n))  # sine window, w[t]^2 + w[t+N]^2 = 1
        phase = math.pi / n * (time[:, None] + 0.5 + n / 2) * (freq[None, :] + 0.5)
        # analysis basis [2N, N]: windowed, orthonormally scaled cosines
        self._basis = (window[:, None] * math.sqrt(2.0 / n) * torch.cos(phase)).float()

    @property
    def fingerprint(self) -> str:
        return f"mdct-sr{self.sample_rate}-hop{self.hop_length}-sine-v1"

    def to(self, device: torch.device | str) -> "MDCTCodec":
        self._basis = self._basis.to(device)
        return self

    def _encode(self, wave: torch.Tensor) -> torch.Tensor:
        B, _, L = wave.shape
        n = self.hop_length
        # periodic extension: start half a hop early, end one hop late -> T frames of 2N with hop N
        shifted = torch.roll(wave[:, 0], shifts=n // 2, dims=-1)  # [B, L]; index 0 = sample -N/2
        extended = torch.cat([shifted, shifted[:, :n]], dim=-1)  # [B, L + N]
        frames = extended.unfold(-1, 2 * n, n)  # [B, T, 2N]
        coeffs = frames @ self._basis.to(wave.device)  # [B, T, N]
        return coeffs.transpose(1, 2).contiguous()  # [B, C=N, T]

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        B, C, T = latent.shape
        n = self.hop_length
        frames = latent.transpose(1, 2) @ self._basis.to(latent.device).T  # [B, T, 2N] windowed
        first, second = frames[..., :n], frames[..., n:]  # frame t covers segments t and t+1 (shifted axis)
        segments = first + torch.roll(second, shifts=1, dims=1)  # overlap-add, circular: [B, T, N]
        shifted = segments.reshape(B, T * n)
        return torch.roll(shifted, shifts=-(n // 2), dims=-1)[:, None]  # [B, 1, L]
