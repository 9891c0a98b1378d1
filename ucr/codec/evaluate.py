"""One table for every codec (``ucr codec evaluate``): how well it reconstructs, how fast, and how additive it is.

Measured on excerpts of a dataset split with stems (``excerpts [N, S, L]``, the mixture their mean, as in training):

- ``si_sdr_db``: scale-invariant SDR of the decoded mixture against the input (dB; higher is better);
- ``mrstft``: multi-resolution STFT distance (FFT sizes 512 / 1024 / 2048, hop 1/4): spectral convergence plus the
  mean absolute log-magnitude difference, averaged over the sizes (0 for a perfect reconstruction);
- ``mel_l1``: mean absolute difference of log-mel spectrograms (80 bands, FFT 1024, hop 256; natural log);
- ``encode_rtf`` / ``decode_rtf``: seconds of compute per second of audio (one batch of all excerpts, on the CPU);
- ``composition_error``: ``||enc(mean_s x_s) - mean_s enc(x_s)|| / ||enc(mean_s x_s)||`` — how far the latent of the
  mixture is from the composition (the mean) of the stems' latents; 0 for a linear codec. The model composes its
  components by the mean in the latent, so this is the error the fixed composition operator makes in that latent.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ucr.codec.base import LatentCodec
from ucr.metrics import si_sdr

STFT_SIZES = (512, 1024, 2048)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 80) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, ``[n_mels, n_fft // 2 + 1]`` (each filter peaks at 1)."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2), n_mels + 2))  # [n_mels + 2] Hz
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # [F]
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None]) / np.maximum(upper - centre, 1e-9)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None)).float()


def _magnitude(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``[N, L]`` -> ``[N, F, T]`` (on ``wave``'s device)."""
    window = torch.hann_window(n_fft, device=wave.device)
    return torch.stft(wave, n_fft, hop, window=window, return_complex=True).abs()


def multi_resolution_stft_distance(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` each -> ``[N]``: spectral convergence + mean |log magnitude difference|, averaged over sizes.
    Differentiable: also the training loss of ``ucr codec train`` (:mod:`ucr.codec.train`)."""
    total = estimate.new_zeros(estimate.shape[0])
    for n_fft in STFT_SIZES:
        est, ref = _magnitude(estimate, n_fft, n_fft // 4), _magnitude(reference, n_fft, n_fft // 4)
        convergence = (est - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp(min=1e-8)
        log_distance = (torch.log(est + 1e-5) - torch.log(ref + 1e-5)).abs().flatten(1).mean(dim=1)
        total += convergence + log_distance
    return total / len(STFT_SIZES)


def log_mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[N, L]`` each -> ``[N]``: mean |log mel(estimate) - log mel(reference)| (80 bands, FFT 1024, hop 256)."""
    bank = mel_filterbank(sample_rate, 1024)

    def log_mel(wave):
        return torch.log(torch.einsum("mf,nft->nmt", bank, _magnitude(wave, 1024, 256) ** 2) + 1e-5)

    return (log_mel(estimate) - log_mel(reference)).abs().flatten(1).mean(dim=1)


def timed_roundtrip(codec: LatentCodec, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """``wave [N, L]`` -> ``(latent [N, C, T], decoded [N, L], encode RTF, decode RTF)`` (seconds of compute per
    second of audio, the batch at once)."""
    seconds = wave.numel() / codec.sample_rate
    started = time.perf_counter()
    latent = codec.encode(wave[:, None])
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = codec.decode(latent)[:, 0, :wave.shape[-1]]
    decode_s = time.perf_counter() - started
    return latent, decoded, encode_s / seconds, decode_s / seconds


def evaluate_codec(codec: LatentCodec, excerpts: torch.Tensor) -> dict:
    """``excerpts [N, S, L]`` (stems, at the codec's rate) -> the table row (see the module docstring)."""
    N, S, L = excerpts.shape
    mixture = excerpts.mean(dim=1)  # [N, L]
    latent, decoded, encode_rtf, decode_rtf = timed_roundtrip(codec, mixture)
    stems = codec.encode(excerpts.reshape(N * S, 1, L)).reshape(N, S, *latent.shape[1:])
    composition = (latent - stems.mean(dim=1)).flatten(1).norm(dim=1) / latent.flatten(1).norm(dim=1).clamp(min=1e-12)
    sdr = si_sdr(decoded.numpy(), mixture.numpy())
    return {"codec": codec.fingerprint, "channels": codec.channels, "frame_rate": codec.frame_rate,
            "excerpts": N, "seconds_each": L / codec.sample_rate,
            "si_sdr_db": float(np.mean(sdr)), "si_sdr_db_min": float(np.min(sdr)),
            "mrstft": float(multi_resolution_stft_distance(decoded, mixture).mean()),
            "mel_l1": float(log_mel_distance(decoded, mixture, codec.sample_rate).mean()),
            "encode_rtf": encode_rtf, "decode_rtf": decode_rtf, "composition_error": float(composition.mean())}


def codec_table(rows: dict[str, dict]) -> str:
    """Markdown table of :func:`evaluate_codec` rows keyed by codec name."""
    lines = ["| codec | latent C x Hz | SI-SDR (dB) | MR-STFT | log-mel L1 | encode RTF | decode RTF | composition error |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        sdr = "exact" if row["si_sdr_db"] > 60 else f"{row['si_sdr_db']:.2f}"
        lines.append(f"| {name} | {row['channels']} x {row['frame_rate']:g} | {sdr} | {row['mrstft']:.3f} | "
                     f"{row['mel_l1']:.3f} | {row['encode_rtf']:.4f} | {row['decode_rtf']:.4f} | "
                     f"{row['composition_error']:.3f} |")
    return "\n".join(lines)


def load_excerpts(root: str, split: str, sources: tuple[str, ...], sample_rate: int, count: int, seconds: float,
                  layout: str = "slakh") -> torch.Tensor:
    """One excerpt from the middle of each of the first ``count`` tracks with every source: ``[N, S, L]``."""
    from ucr.data.readers import usable_tracks

    length = int(round(seconds * sample_rate))
    out = []
    for track in usable_tracks(root, split, layout, sources, sample_rate):
        if track.sources.shape[-1] < length:
            continue
        start = (track.sources.shape[-1] - length) // 2
        out.append(torch.from_numpy(np.ascontiguousarray(track.sources[:, start:start + length])).float())
        if len(out) == count:
            break
    if not out:
        raise ValueError(f"no track of {root}/{split} has all of {list(sources)} and at least {seconds:g} s")
    return torch.stack(out)


def roundtrip(input_uri: str, codec_config, output_uri: str | None = None) -> dict:
    """Encode and decode one file (``ucr codec roundtrip``); return SI-SDR and real-time factors."""
    from ucr import audio
    from ucr.codec import build_codec

    codec = build_codec(codec_config)
    wave, _ = audio.read(input_uri, sample_rate=codec.sample_rate, mono=True)  # [1, L]
    latent, decoded, encode_rtf, decode_rtf = timed_roundtrip(codec, torch.from_numpy(wave))
    result = {"codec": codec.fingerprint, "seconds": wave.shape[-1] / codec.sample_rate,
              "latent_shape": list(latent.shape[1:]), "si_sdr_db": float(si_sdr(decoded[0].numpy(), wave[0])),
              "encode_rtf": encode_rtf, "decode_rtf": decode_rtf}
    if output_uri:
        audio.write(output_uri, decoded.numpy(), codec.sample_rate)
    return result
