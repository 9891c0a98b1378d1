"""The codec interface the rest of the project depends on.

A :class:`LatentCodec` maps mono audio at ``sample_rate`` to a latent sequence at ``frame_rate``:
``encode(wave [B, 1, L]) -> latent [B, C, T]`` and ``decode(latent [B, C, T]) -> wave [B, 1, T * hop_length]``,
with ``T = ceil(L / hop_length)``. Codecs are frozen: no gradients, inference mode. Long audio is processed in
segments so memory stays bounded. ``fingerprint`` names codec + weights + settings, so caches can refuse latents made
by another codec.
"""

from __future__ import annotations

import abc
import math

import torch


class LatentCodec(abc.ABC):
    sample_rate: int
    hop_length: int  # audio samples per latent frame
    channels: int  # C

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A short string that changes whenever the latents would change (codec, weights, settings)."""

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    @torch.inference_mode()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 1, L]`` float audio -> ``[B, C, T]`` latent, ``T = ceil(L / hop_length)``."""
        if wave.ndim != 3 or wave.shape[1] != 1:
            raise ValueError(f"encode expects mono audio [B, 1, L], got shape {tuple(wave.shape)}")
        if wave.shape[-1] == 0:
            raise ValueError("encode got zero-length audio")
        frames = self.num_frames(wave.shape[-1])
        padded = torch.nn.functional.pad(wave.float(), (0, frames * self.hop_length - wave.shape[-1]))
        latent = self._encode(padded)
        assert latent.shape == (wave.shape[0], self.channels, frames), latent.shape
        return latent

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` latent -> ``[B, 1, T * hop_length]`` audio."""
        if latent.ndim != 3 or latent.shape[1] != self.channels:
            raise ValueError(f"decode expects a latent [B, {self.channels}, T], got shape {tuple(latent.shape)}")
        wave = self._decode(latent.float())
        assert wave.shape == (latent.shape[0], 1, latent.shape[-1] * self.hop_length), wave.shape
        return wave

    @torch.inference_mode()
    def decode_components(self, parts: torch.Tensor, mixture: torch.Tensor, mask_power: float = 1.0
                          ) -> torch.Tensor:
        """Separated components ``parts [B, K, C, T]`` of the mixtures ``mixture [B, L]`` (audio, ``L <= T * hop``)
        -> waveforms ``[B, K, T * hop_length]``. Every separation decodes through here. This default decodes each
        component on its own and does not need the mixture; a codec whose latent drops what the mixture still
        carries (a magnitude codec drops the phase) overrides it to decode against the mixture, as masks whose
        sharpness ``mask_power`` sets (``diffusion.mask_power``; codecs that decode without masks ignore it)."""
        self._check_components(parts, mixture)
        B, K, C, T = parts.shape
        return self.decode(parts.reshape(B * K, C, T)).reshape(B, K, -1)

    def _check_components(self, parts: torch.Tensor, mixture: torch.Tensor) -> None:
        if parts.ndim != 4 or parts.shape[2] != self.channels or mixture.ndim != 2 or mixture.shape[0] != parts.shape[0]:
            raise ValueError(f"decode_components expects parts [B, K, {self.channels}, T] and mixture [B, L], got "
                             f"shapes {tuple(parts.shape)} and {tuple(mixture.shape)}")
        if mixture.shape[-1] > parts.shape[-1] * self.hop_length:
            raise ValueError(f"decode_components: the mixture has {mixture.shape[-1]} samples, more than the "
                             f"{parts.shape[-1]} frames of the components cover ({parts.shape[-1] * self.hop_length})")

    @abc.abstractmethod
    def _encode(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T * hop]`` (already padded) -> ``[B, C, T]``."""

    @abc.abstractmethod
    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, 1, T * hop]``."""

    def to(self, device: torch.device | str) -> "LatentCodec":
        return self

    def describe(self) -> dict:
        return {"fingerprint": self.fingerprint, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "channels": self.channels, "hop_length": self.hop_length}
