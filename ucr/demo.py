"""What `make demo` runs. Today: a codec round trip on generated audio; it grows into the end-to-end experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def test_signal(seconds: float = 5.0, sample_rate: int = 24000, seed: int = 0) -> np.ndarray:
    """A bass-like harmonic line plus noise-burst percussion, ``[1, L]`` float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    notes = 55.0 * 2 ** (rng.integers(0, 12, size=int(seconds * 2)) / 12)  # two notes per second
    freq = notes[np.minimum((t * 2).astype(int), len(notes) - 1)]
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    bass = sum(np.sin(h * phase) / h for h in range(1, 6)) * 0.3
    hits = np.zeros_like(t)
    for onset in np.arange(0, seconds, 0.25):
        start = int(onset * sample_rate)
        length = min(len(t) - start, int(0.08 * sample_rate))
        hits[start:start + length] += rng.normal(size=length) * np.exp(-np.arange(length) / (0.015 * sample_rate))
    wave = bass + 0.3 * hits
    return (wave / np.max(np.abs(wave)) * 0.8).astype(np.float32)[None]


def run_demo(args: argparse.Namespace) -> int:
    from ucr import audio
    from ucr.cli import roundtrip
    from ucr.config import load_config

    config = load_config(args.preset, args.overrides)
    out = Path(args.out)
    source = out / "test_signal.wav"
    audio.write(str(source), test_signal(sample_rate=config.data.sample_rate), config.data.sample_rate)
    result = roundtrip(str(source), config.codec, str(out / "test_signal_roundtrip.wav"))
    print(f"[demo] preset {config.name!r}: codec round trip of {result['seconds']:.1f} s of generated audio")
    print(f"[demo]   codec      {result['codec']}")
    print(f"[demo]   SI-SDR     {result['si_sdr_db']:.1f} dB")
    print(f"[demo]   encode RTF {result['encode_rtf']:.4f}   decode RTF {result['decode_rtf']:.4f}")
    print(f"[demo] outputs in {out.resolve()}")
    return 0
