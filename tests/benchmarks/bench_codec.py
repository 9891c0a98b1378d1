"""Encode/decode real-time factors of both codecs on 30 s of audio (medians over repeats).

Run: .venv/bin/python tests/benchmarks/bench_codec.py [--seconds 30] [--repeats 5]
EnCodec uses randomly initialised weights of the full 24 kHz architecture: the speed is the same as with the
pretrained weights, which cannot be downloaded here.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from ucr.codec import MDCTCodec
from ucr.codec.encodec import EncodecCodec, random_encodec_model


def test_signal(seconds: float, sample_rate: int = 24000, seed: int = 0) -> np.ndarray:
    """``[1, L]``: a bass-like harmonic line plus noise-burst percussion."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    notes = 55.0 * 2 ** (rng.integers(0, 12, size=int(seconds * 2) + 1) / 12)
    phase = 2 * np.pi * np.cumsum(notes[(t * 2).astype(int)]) / sample_rate
    hits = rng.normal(size=t.shape) * np.exp(-(t % 0.25) / 0.015)
    wave = sum(np.sin(h * phase) / h for h in range(1, 6)) * 0.3 + 0.3 * hits
    return (wave / np.abs(wave).max() * 0.8).astype(np.float32)[None]


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    wave = torch.from_numpy(test_signal(args.seconds))[None]  # [1, 1, L]
    model = random_encodec_model()
    codecs = {
        "mdct": MDCTCodec(),
        "encodec-quantized-24kbps": EncodecCodec(model, latent_kind="quantized", bandwidth=24.0),
        "encodec-continuous": EncodecCodec(model, latent_kind="continuous"),
    }
    print(f"# {args.seconds:.0f} s of audio, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; median of {args.repeats}")
    print(f"| codec | encode RTF | decode RTF | encode x realtime | decode x realtime |")
    print(f"|---|---|---|---|---|")
    for name, codec in codecs.items():
        latent = codec.encode(wave)
        encode_s = median_seconds(lambda: codec.encode(wave), args.repeats)
        decode_s = median_seconds(lambda: codec.decode(latent), args.repeats)
        print(f"| {name} | {encode_s / args.seconds:.4f} | {decode_s / args.seconds:.4f} | "
              f"{args.seconds / encode_s:.0f} | {args.seconds / decode_s:.0f} |")


if __name__ == "__main__":
    main()
