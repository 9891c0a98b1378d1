"""Latent codecs: the frozen audio <-> latent maps the model works in."""

from __future__ import annotations

from ucr.codec.base import LatentCodec
from ucr.codec.mdct import MDCTCodec
from ucr.codec.stats import LatentStats
from ucr.config import CODEC_NAMES

__all__ = ["LatentCodec", "MDCTCodec", "LatentStats", "build_codec", "channel_frequencies", "CODEC_NAMES"]


def build_codec(config) -> LatentCodec:
    """The one place a :class:`ucr.config.CodecConfig` becomes a codec."""
    if config.name == "mdct":
        return MDCTCodec(hop_length=config.hop_length)
    if config.name == "stft_mag":
        from ucr.codec.stft import STFTMagnitudeCodec

        return STFTMagnitudeCodec(hop_length=config.hop_length)
    if config.name == "stft_if":
        from ucr.codec.stft import STFTPhaseCodec

        return STFTPhaseCodec(hop_length=config.hop_length)
    if config.name == "encodec":
        from ucr.codec.encodec import EncodecCodec

        return EncodecCodec.from_source(config.weights, latent_kind=config.latent_kind, bandwidth=config.bandwidth,
                                        segment_seconds=config.segment_seconds)
    raise ValueError(f"unknown codec {config.name!r}; choose one of {list(CODEC_NAMES)}")


def channel_frequencies(config, sample_rate: int = 24000) -> list[float] | None:
    """The frequency (Hz) each latent channel of the codec a :class:`ucr.config.CodecConfig` names stands for, from the
    config alone (no weights loaded): ``[C]``; None for EnCodec, whose channels are not frequencies. MDCT channel c
    is the band centred on (c + 1/2) sr / (2 hop); STFT channel c the bin c sr / (2 hop); ``stft_if`` stacks its
    magnitude and its phase advance, both per bin."""
    hop = config.hop_length
    bins = [c * sample_rate / (2 * hop) for c in range(hop + 1)]
    if config.name == "mdct":
        return [(c + 0.5) * sample_rate / (2 * hop) for c in range(hop)]
    if config.name == "stft_mag":
        return bins
    if config.name == "stft_if":
        return bins + bins
    return None
