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

import torch

from ucr.codec import MDCTCodec
from ucr.codec.encodec import EncodecCodec, random_encodec_model
from ucr.demo import test_signal


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
