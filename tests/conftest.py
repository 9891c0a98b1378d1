"""Shared fixtures: small generated audio, a tiny randomly initialised EnCodec, isolated environments."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub (must be set before HF imports)

SR = 24000


def tone_mix(seconds: float = 1.0, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """``[1, L]`` float32: two harmonic tones and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.4 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.normal(size=t.shape)
    return wave.astype(np.float32)[None]


@pytest.fixture
def wav_file(tmp_path):
    from ucr import audio

    path = tmp_path / "tone.wav"
    audio.write(str(path), tone_mix(), SR)
    return path


@pytest.fixture(scope="session")
def tiny_encodec_config():
    from transformers import EncodecConfig

    return EncodecConfig(num_filters=4, hidden_size=16, codebook_size=32, num_lstm_layers=1)


@pytest.fixture(scope="session")
def tiny_encodec(tiny_encodec_config):
    from ucr.codec.encodec import random_encodec_model

    return random_encodec_model(tiny_encodec_config, seed=0)
