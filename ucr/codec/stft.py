"""A magnitude codec: the STFT magnitude at EnCodec's 24 kHz / 75 Hz framing (lossy: the phase is dropped).

Frame ``t`` is a square-root-Hann-windowed FFT of ``n_fft = 2 * hop`` samples centred on sample ``t * hop + hop/2``; the latent is its
magnitude, ``[B, C = hop + 1, T]``, channel ``f`` the frequency ``f * sr / n_fft``. Unlike the MDCT's signed,
phase-exact coefficients, a magnitude is smooth in time for a steady note and its posterior mean under noise is
not cancelled by unknown signs; sums of sources map to sums of magnitudes only approximately (exactly where the
sources do not overlap in time-frequency, the assumption of NMF). Decoding alone needs a phase: Griffin-Lim
(``griffin_lim_iters``). Separation does better with the mixture's own phase: :func:`mask_decode` turns component
magnitudes into ratio masks on the mixture's STFT.
"""

from __future__ import annotations

import torch

from ucr.codec.base import LatentCodec


class STFTMagnitudeCodec(LatentCodec):
    def __init__(self, sample_rate: int = 24000, hop_length: int = 320, griffin_lim_iters: int = 32) -> None:
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_fft = 2 * hop_length
        self.channels = hop_length + 1
        self.griffin_lim_iters = griffin_lim_iters
        self._window = torch.hann_window(self.n_fft, periodic=True).sqrt()  # w^2 sums to 1 at hop n_fft/2

    @property
    def fingerprint(self) -> str:
        return f"stftmag-sr{self.sample_rate}-hop{self.hop_length}-hann{self.n_fft}-v1"

    def to(self, device: torch.device | str) -> "STFTMagnitudeCodec":
        self._window = self._window.to(device)
        return self

    def spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` (L a multiple of hop) -> complex STFT ``[B, C, T]``, T = L / hop. Frame t windows samples
        ``[t*hop - hop/2, t*hop + 3*hop/2)`` of the signal taken as periodic (like the MDCT), with a square-root Hann
        window, so every sample lies in exactly two frames and :meth:`inverse` is exact."""
        n = self.hop_length
        extended = torch.cat([wave[..., -(n // 2):], wave, wave[..., : n - n // 2]], dim=-1)  # [B, L + hop]
        frames = extended.unfold(-1, self.n_fft, n) * self._window.to(wave.device)  # [B, T, n_fft]
        return torch.fft.rfft(frames, dim=-1).transpose(1, 2)  # [B, C, T]

    def inverse(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex ``[B, C, T]`` -> ``[B, T * hop]``: windowed overlap-add, circular (exact for a spectrum of
        :meth:`spectrum`; the least-squares signal for any other)."""
        n = self.hop_length
        B, _, T = spec.shape
        frames = torch.fft.irfft(spec.transpose(1, 2), n=self.n_fft, dim=-1) * self._window.to(spec.device)
        first, second = frames[..., :n], frames[..., n:]  # frame t covers segments t and t + 1 of the extension
        segments = first + torch.roll(second, shifts=1, dims=1)  # [B, T, hop], circular overlap-add
        return torch.roll(segments.reshape(B, T * n), shifts=-(n // 2), dims=-1)

    def _encode(self, wave: torch.Tensor) -> torch.Tensor:
        return self.spectrum(wave[:, 0]).abs()

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        magnitude = latent.clamp(min=0)
        generator = torch.Generator(device="cpu").manual_seed(0)
        phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * 2 * torch.pi
        spec = torch.polar(magnitude, phase)
        for _ in range(self.griffin_lim_iters):  # Griffin-Lim: keep the magnitude, take the consistent phase
            spec = torch.polar(magnitude, self.spectrum(self.inverse(spec)).angle())
        return self.inverse(spec)[:, None]

    @torch.inference_mode()
    def decode_components(self, parts: torch.Tensor, mixture: torch.Tensor, mask_power: float = 1.0
                          ) -> torch.Tensor:
        """Separated magnitudes ``parts [B, K, C, T]`` -> waveforms ``[B, K, T * hop]``: ratio masks on the complex
        STFT of ``mixture [B, L]`` (:func:`mask_decode`, magnitudes to the power ``mask_power``), so the components
        keep the mixture's phase and sum to it, instead of each taking a Griffin-Lim phase of its own."""
        self._check_components(parts, mixture)
        length = parts.shape[-1] * self.hop_length
        padded = torch.nn.functional.pad(mixture.float(), (0, length - mixture.shape[-1]))
        return mask_decode(self, parts.float(), padded, mask_power)


def mask_decode(codec: STFTMagnitudeCodec, parts: torch.Tensor, mixture_wave: torch.Tensor,
                mask_power: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """Components' magnitudes ``parts [B, K, C, T]`` -> waveforms ``[B, K, T * hop]`` that sum to the mixture:
    ratio masks ``m_k = max(p_k, 0) ** q / sum_j max(p_j, 0) ** q`` (``q = mask_power``: 1 the ratio of magnitudes,
    2 of powers, the Wiener gain for uncorrelated sources; larger q, harder masks) applied to the complex STFT of
    ``mixture_wave [B, T * hop]``; a bin where no component is positive is shared equally, so nothing of the
    mixture is dropped."""
    if not mask_power > 0.0:
        raise ValueError(f"mask_power must be > 0, got {mask_power}")
    magnitude = parts.clamp(min=0).pow(mask_power)
    total = magnitude.sum(dim=1, keepdim=True)
    masks = torch.where(total > eps, magnitude / total.clamp(min=eps), 1.0 / parts.shape[1])  # [B, K, C, T]
    spec = codec.spectrum(mixture_wave)  # [B, C, T]
    B, K, C, T = parts.shape
    return codec.inverse((masks * spec[:, None]).reshape(B * K, C, T)).reshape(B, K, -1)


class STFTPhaseCodec(STFTMagnitudeCodec):
    """A phase-coherent STFT codec (``codec.name: stft_if``): compressed magnitude plus instantaneous frequency.

    Same framing as :class:`STFTMagnitudeCodec`. The latent stacks two ``[hop + 1]``-channel halves,
    ``[B, C = 2 (hop + 1), T]``:

    - ``c = |X| ** power`` (power-law compression, ``power`` = 0.3), channels ``0 .. hop``;
    - ``c * d``, channels ``hop + 1 ..``, where ``d_t = princarg(phi_t - phi_{t-1} - pi f) / pi`` in [-1, 1] is the
      frame-to-frame phase advance of bin ``f`` minus the advance of a sinusoid at the bin's centre (``pi f`` for a
      hop of half the frame), ``phi_{-1} = 0``. A steady partial is then a constant in both halves over time, not a
      rotating sign pattern (the representation GANSynth generated harmonics in). The advance is weighted by ``c``
      so that bins without energy, whose phase is noise, read 0 instead of a uniform random value.

    Decoding divides by ``c`` and integrates the advances from ``phi_{-1} = 0`` (in float64): the first frame's
    phase is carried by ``d_0`` itself, so nothing else is stored and the round trip is exact up to float error,
    except in bins where ``c`` is exactly 0, whose phase is irrelevant. Not linear: the latent of a sum is not the sum
    of the latents (``ucr codec evaluate`` reports how far).
    """

    def __init__(self, sample_rate: int = 24000, hop_length: int = 320, power: float = 0.3) -> None:
        super().__init__(sample_rate, hop_length)
        self.bins = hop_length + 1
        self.channels = 2 * self.bins
        self.power = power

    @property
    def fingerprint(self) -> str:
        return f"stftif-sr{self.sample_rate}-hop{self.hop_length}-hann{self.n_fft}-pow{self.power:g}-v1"

    def _centre_advance(self, device) -> torch.Tensor:
        """Phase advance per frame of a sinusoid at each bin's centre: ``2 pi f hop / n_fft = pi f``. ``[C, 1]``."""
        return (torch.pi * torch.arange(self.bins, device=device, dtype=torch.float64))[:, None]

    def _encode(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.spectrum(wave[:, 0])  # [B, F, T]
        compressed = spec.abs() ** self.power
        phase = spec.angle().double()
        previous = torch.nn.functional.pad(phase, (1, 0))[..., :-1]  # phi_{t-1}, with phi_{-1} = 0
        advance = phase - previous - self._centre_advance(spec.device)
        deviation = torch.remainder(advance + torch.pi, 2 * torch.pi) - torch.pi  # princarg, in [-pi, pi)
        return torch.cat([compressed, compressed * (deviation / torch.pi).float()], dim=1)

    def decode_components(self, parts: torch.Tensor, mixture: torch.Tensor, mask_power: float = 1.0
                          ) -> torch.Tensor:
        """Each component through its own integrated phase (this latent carries one): the default decoding, no
        masks (``mask_power`` is ignored)."""
        return LatentCodec.decode_components(self, parts, mixture)

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        compressed = latent[:, : self.bins].clamp(min=0)
        weighted = latent[:, self.bins:]
        deviation = torch.where(compressed > 0, weighted / compressed.clamp(min=1e-12), torch.zeros_like(weighted))
        deviation = deviation.clamp(-1.0, 1.0).double() * torch.pi
        phase = torch.cumsum(deviation + self._centre_advance(latent.device), dim=-1)
        magnitude = compressed.double() ** (1.0 / self.power)
        spec = torch.polar(magnitude, torch.remainder(phase, 2 * torch.pi)).to(torch.complex64)
        return self.inverse(spec)[:, None]
