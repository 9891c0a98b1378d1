"""Latent codecs: the frozen audio <-> latent maps the model works in."""

from __future__ import annotations

from ucr.codec.base import LatentCodec
from ucr.codec.mdct import MDCTCodec
from ucr.codec.stats import LatentStats
from ucr.config import CODEC_NAMES

__all__ = ["LatentCodec", "MDCTCodec", "LatentStats", "build_codec", "CODEC_NAMES"]



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
