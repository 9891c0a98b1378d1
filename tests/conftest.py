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


def unknown_length_flac(wave: np.ndarray, sample_rate: int = SR) -> bytes:
    """FLAC bytes of ``wave [L]`` whose STREAMINFO says "total samples unknown" (0), as streaming encoders write."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO must be the first metadata block"
    first = 8 + 13  # the 36-bit total-samples field: low 4 bits of byte 21, then bytes 22-25
    data[first] &= 0xF0
    data[first + 1:first + 5] = bytes(4)
    return bytes(data)


def streaming_wav(wave: np.ndarray, sample_rate: int = SR) -> bytes:
    """16-bit WAV bytes of ``wave [L]`` whose RIFF and data sizes are 0xFFFFFFFF ("until the end of the file")."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    at = data.find(b"data")
    data[4:8] = data[at + 4:at + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


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


# ------------------------------------------------------------------------------------------------ dataset fixtures
def write_slakh_track(root, split: str, name: str, stems: dict, seconds: float = 2.0, sample_rate: int = SR,
                      seed: int = 0) -> dict:
    """Write one Slakh-layout track. ``stems``: {"S00": ("Drums", freq_hz or None for noise, gain), ...}.

    Returns ``{inst_class: summed waveform [L]}`` so tests can compare with what the reader returns.
    """
    import yaml

    from ucr import audio, storage

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sums: dict = {}
    metadata = {"UUID": name, "audio_dir": "stems", "midi_dir": "MIDI", "stems": {}}
    for stem_id, (inst_class, freq, gain) in stems.items():
        wave = (np.sin(2 * np.pi * freq * t) if freq else rng.normal(size=t.shape) * 0.5) * gain
        wave = wave.astype(np.float32)
        audio.write(storage.join(str(root), split, name, "stems", f"{stem_id}.flac"), wave[None], sample_rate)
        back, _ = audio.read(storage.join(str(root), split, name, "stems", f"{stem_id}.flac"))
        sums[inst_class] = sums.get(inst_class, 0) + back[0]
        metadata["stems"][stem_id] = {"inst_class": inst_class, "audio_rendered": True, "is_drum": inst_class == "Drums",
                                      "program_num": 0}
    storage.write_text(storage.join(str(root), split, name, "metadata.yaml"), yaml.safe_dump(metadata))
    return sums


@pytest.fixture
def slakh_root(tmp_path):
    """A tiny Slakh-layout dataset: multi-stem classes, a track without bass, an omitted track."""
    root = tmp_path / "slakh"
    drums_bass = {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3), "S02": ("Bass", 110.0, 0.2),
                  "S03": ("Piano", 440.0, 0.2)}
    for i, split in enumerate(["train", "train", "train", "validation", "test"]):
        write_slakh_track(root, split, f"Track{i + 1:05d}", drums_bass, seed=i)
    write_slakh_track(root, "train", "Track00010", {"S00": ("Drums", None, 0.3), "S01": ("Piano", 220.0, 0.3)})
    write_slakh_track(root, "omitted", "Track00099", drums_bass)
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint on loopback (moto server) with a fresh bucket; yields ``s3://bucket``."""
    import shutil
    import socket
    import subprocess
    import time

    executable = shutil.which("moto_server") or os.path.join(os.path.dirname(__import__("sys").executable),
                                                             "moto_server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        from ucr import storage

        fs, _ = storage.filesystem("s3://ucr-test")
        fs.mkdir("ucr-test")
        yield "s3://ucr-test"
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
