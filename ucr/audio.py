"""Reading, writing and conditioning waveforms (soundfile for I/O, soxr for resampling; no torchaudio).

Waveforms are float32 numpy arrays shaped ``[channels, L]``. Every reader error is a ``ValueError`` that names the
file and the reason, so a data job can skip the file, count it and go on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from ucr import storage


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the reason."""


class TooLongError(AudioError):
    """Audio longer than the caller allows (found from the header, or while decoding a file of unknown length)."""

    def __init__(self, message: str, seconds: float | None) -> None:
        super().__init__(message)
        self.seconds = seconds  # the length, or None when decoding stopped at the limit of a file of unknown length


# libsndfile reports this frame count for streams whose header does not say (a FLAC with total_samples = 0)
UNKNOWN_FRAMES = 2**63 - 1
# WAV writers that stream (they cannot seek back to fill in the size) leave the data chunk's size at this value
_WAV_SIZE_UNKNOWN = 0xFFFFFFFF
_BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _open_bytes(uri: str) -> bytes:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise AudioError(f"{uri}: file not found") from None
    if not data:
        raise AudioError(f"{uri}: the file is empty (0 bytes)")
    return data


def info(uri: str) -> AudioInfo:
    """Header facts without decoding the samples (for a file whose header does not give its length, the frames are
    counted by decoding it block by block, in bounded memory)."""
    data = _open_bytes(uri)
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            frames = int(handle.frames)
            if frames >= UNKNOWN_FRAMES:
                frames = sum(block.shape[0] for block in _blocks_to_end(handle))
            return AudioInfo(int(handle.samplerate), int(handle.channels), frames)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{uri}: not a readable audio file ({err})") from None


def read(uri: str, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode ``uri`` (any format libsndfile reads: wav, flac, ogg, ...) to float32 ``[channels, L]``.

    ``sample_rate``: resample to it when given. ``mono``: average the channels into one.
    Raises :class:`AudioError` for empty, non-audio, truncated, zero-length or non-finite files.
    Returns ``(wave [1 or channels, L], sample_rate)``.
    """
    return decode_bytes(_open_bytes(uri), name=uri, sample_rate=sample_rate, mono=mono)


def _wav_missing_bytes(data: bytes) -> int:
    """Bytes the RIFF header of a WAV file promises beyond what is there (0 when complete or not a WAV)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    position = 12
    while position + 8 <= len(data):
        chunk_id, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if chunk_id == b"data":
            if size == _WAV_SIZE_UNKNOWN:  # a streaming writer's "to the end of the file": nothing is promised
                return 0
            return max(0, position + 8 + size - len(data))
        position += 8 + size + (size & 1)
    return 0


def _blocks_to_end(handle: sf.SoundFile):
    """Yield float32 ``[frames, channels]`` blocks until the stream ends, for files that do not declare their length.

    soundfile's own ``read``/``blocks`` ask libsndfile for the current position after each read, and libsndfile's
    FLAC decoder cannot seek in a stream of unknown length ("Internal psf_fseek() failed"), so this calls the C
    reader directly: sequential reads only.
    """
    while True:
        block = np.empty((_BLOCK_FRAMES, handle.channels), dtype=np.float32)
        got = sf._snd.sf_readf_float(handle._file, sf._ffi.cast("float *", block.ctypes.data), _BLOCK_FRAMES)
        if got > 0:
            yield block[:got]
        if got < _BLOCK_FRAMES:
            return


def decode_bytes(data: bytes, name: str = "upload", sample_rate: int | None = None,
                 mono: bool = True, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Like :func:`read` for bytes already in memory (HTTP uploads).

    ``max_seconds``: refuse longer audio with :class:`TooLongError` — from the header before anything is decoded, or,
    for a file that does not declare its length, as soon as decoding passes the limit (memory stays bounded).
    """
    if not data:
        raise AudioError(f"{name}: the file is empty (0 bytes)")
    missing = _wav_missing_bytes(data)
    if missing:
        raise AudioError(f"{name}: truncated file (the WAV header promises {missing} more bytes of samples)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            declared = handle.frames
            rate = int(handle.samplerate)
            check_format(rate, int(handle.channels), name)
            limit = None if max_seconds is None else int(max_seconds * rate)
            if declared >= UNKNOWN_FRAMES:  # the header does not say: decode block by block, up to the limit
                declared = 0
                blocks, total = [], 0
                for block in _blocks_to_end(handle):
                    blocks.append(block)
                    total += block.shape[0]
                    if limit is not None and total > limit:
                        raise TooLongError(f"{name}: longer than {max_seconds:g} s (its header does not give its "
                                           f"length; decoding stopped there)", None)
                wave = (np.concatenate(blocks) if blocks else np.zeros((0, handle.channels), np.float32)).T
            else:
                if limit is not None and declared > limit:
                    raise TooLongError(f"{name}: {declared / rate:.1f} s long, more than {max_seconds:g} s",
                                       declared / rate)
                wave = handle.read(dtype="float32", always_2d=True).T
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{name}: not a readable audio file ({err})") from None
    if wave.shape[1] == 0:
        raise AudioError(f"{name}: the file holds no samples (zero length)")
    if declared > 0 and wave.shape[1] < declared:
        raise AudioError(f"{name}: truncated file (header declares {declared} frames, {wave.shape[1]} read)")
    check_finite(wave, name)
    if mono:
        wave = to_mono(wave)
    if sample_rate is not None and sample_rate != rate:
        wave, rate = resample(wave, rate, sample_rate), sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), rate


# Output formats: container -> (default subtype, subtypes a user may ask for by bit depth)
FORMATS = {"WAV": "FLOAT", "FLAC": "PCM_24", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}
EXTENSIONS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}
SAMPLE_FORMATS = {"int16": "PCM_16", "int24": "PCM_24", "float32": "FLOAT"}
_FORMAT_SAMPLE_FORMATS = {"WAV": ("int16", "int24", "float32"), "FLAC": ("int16", "int24")}
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1/2/2.5 Layer III


def output_subtype(format: str, sample_format: str | None = None) -> str:
    """The soundfile subtype for ``format`` (WAV, FLAC, OGG, MP3) and an optional ``sample_format`` (int16, int24,
    float32); a clear error for a combination the format cannot store or this libsndfile cannot encode."""
    format = format.upper()
    if format not in FORMATS:
        raise ValueError(f"unknown audio format {format!r}; choose one of {sorted(FORMATS)}")
    if format == "MP3" and "MPEG_LAYER_III" not in sf.available_subtypes("MP3"):
        raise ValueError(f"this soundfile/libsndfile ({sf.__libsndfile_version__}) cannot encode MP3 (it needs "
                         f"libsndfile 1.1 or later built with LAME and mpg123); write WAV or FLAC instead")
    if sample_format is None:
        return FORMATS[format]
    allowed = _FORMAT_SAMPLE_FORMATS.get(format, ())
    if sample_format not in allowed:
        raise ValueError(f"{format} cannot store {sample_format} samples" + (
            f"; choose one of {list(allowed)}" if allowed else " (its sample format is fixed); drop the option"))
    return SAMPLE_FORMATS[sample_format]


def encode_bytes(wave: np.ndarray, sample_rate: int, format: str = "WAV", subtype: str | None = None) -> bytes:
    """``[channels, L]`` or ``[L]`` float -> encoded file bytes (WAV float32 by default, or FLAC/OGG/MP3).
    Every format but float WAV clips to full scale [-1, 1]."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f"expected a waveform [channels, L], got shape {wave.shape}")
    format = format.upper()
    subtype = subtype or output_subtype(format)
    if format == "MP3" and sample_rate not in MP3_SAMPLE_RATES:
        raise ValueError(f"MP3 cannot store {sample_rate} Hz audio; choose an output rate among {MP3_SAMPLE_RATES}")
    if subtype != "FLOAT":  # integer and compressed encodings wrap or distort past full scale
        wave = np.clip(wave, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, wave.T, sample_rate, format=format, subtype=subtype)
    return buffer.getvalue()


def format_of(uri: str) -> str:
    """The container a file name asks for, from its extension (.wav, .flac, .ogg, .mp3)."""
    format = EXTENSIONS.get(str(uri).rsplit(".", 1)[-1].lower())
    if format is None:
        raise ValueError(f"{uri}: unsupported extension; use one of {['.' + e for e in EXTENSIONS]}")
    return format


def write(uri: str, wave: np.ndarray, sample_rate: int, sample_format: str | None = None) -> None:
    """Atomically write a waveform ``[channels, L]`` or ``[L]``; the format follows the extension (.wav float32,
    .flac 24-bit, .ogg, .mp3), ``sample_format`` (int16, int24, float32) overrides the bit depth of WAV and FLAC.
    A local file gets the usual mode of a new file (0644 under the common umask)."""
    format = format_of(uri)
    storage.write_bytes(uri, encode_bytes(wave, sample_rate, format=format,
                                          subtype=output_subtype(format, sample_format)))


# Bounds on what is decoded at all: beyond them a file is not music audio, and decoding it would cost memory for
# nothing (a 343 KB constant FLAC declaring 8 channels at 655 kHz decodes to gigabytes).
MAX_SAMPLE_RATE = 192_000  # Hz
MAX_CHANNELS = 8
# Float files may exceed full scale a little (headroom); samples this far above it are not audio, and the model's
# arithmetic overflows on them (1e30 gave all-NaN components).
MAX_ABS_SAMPLE = 1e3


def check_format(sample_rate: int, channels: int, name: str = "audio") -> None:
    """Refuse sample rates and channel counts no music recording has (checked from the header, before decoding)."""
    if not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: sample rate {sample_rate} Hz is outside 1 .. {MAX_SAMPLE_RATE} Hz; "
                         f"resample the file (e.g. to 44.1 or 48 kHz)")
    if not 0 < channels <= MAX_CHANNELS:
        raise AudioError(f"{name}: {channels} channels; at most {MAX_CHANNELS} are accepted: downmix the file first")


def check_finite(wave: np.ndarray, name: str = "audio") -> None:
    """Samples must be finite and of audio magnitude (|x| <= MAX_ABS_SAMPLE; full scale is 1)."""
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(f"{name}: {bad} sample(s) are NaN or infinite")
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(f"{name}: peak sample magnitude {peak:.3g} is not audio (full scale is 1, at most "
                         f"{MAX_ABS_SAMPLE:g} is accepted); normalise the file")


MIN_SECONDS = 0.1  # the shortest input that is separated (or varied)
SILENCE_DB = -80.0  # RMS (dBFS) below which an input has nothing to separate


def check_separable(wave: np.ndarray, sample_rate: int, name: str = "input audio") -> np.ndarray:
    """The one check of audio that is to be separated or varied (the CLI, the pipeline and Serve all reach it
    through ``Pipeline.prepare``): ``[channels, L]`` float samples at ``sample_rate`` -> the mono downmix
    ``[1, L]``. Raises :class:`AudioError` with one sentence saying what to change for non-finite or out-of-range
    samples, input shorter than :data:`MIN_SECONDS`, and silence."""
    check_finite(wave, name)
    seconds = wave.shape[-1] / sample_rate
    if seconds < MIN_SECONDS:
        raise AudioError(f"{name} is too short: {seconds * 1000:.0f} ms; give at least {MIN_SECONDS:g} s of audio")
    mono = to_mono(wave)
    if is_silent(mono):
        raise AudioError(f"{name} is silent (RMS {rms_db(mono):.0f} dBFS): there is nothing to separate; give "
                         f"audio with content above {SILENCE_DB:g} dBFS")
    return mono


def to_mono(wave: np.ndarray) -> np.ndarray:
    """``[channels, L]`` -> ``[1, L]`` (mean over channels)."""
    if wave.ndim != 2:
        raise ValueError(f"expected [channels, L], got shape {wave.shape}")
    return wave.mean(axis=0, keepdims=True) if wave.shape[0] > 1 else wave


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality). ``[channels, L] -> [channels, L']``."""
    if orig_rate == target_rate:
        return wave
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    out = soxr.resample(np.ascontiguousarray(wave.T, dtype=np.float32), orig_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(np.atleast_2d(out.T), dtype=np.float32)


def peak(wave: np.ndarray) -> float:
    return float(np.max(np.abs(wave))) if wave.size else 0.0


def rms(wave: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    value = np.sqrt(np.mean(np.square(wave, dtype=np.float64), axis=axis))
    return float(value) if axis is None else value


def rms_db(wave: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a simple loudness check; -inf for silence)."""
    level = rms(wave)
    return float(20 * np.log10(level)) if level > 0 else float("-inf")


def is_silent(wave: np.ndarray, threshold_db: float = SILENCE_DB) -> bool:
    return rms_db(wave) < threshold_db


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis to ``length``."""
    if wave.shape[-1] >= length:
        return wave[..., :length]
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, length - wave.shape[-1])]
    return np.pad(wave, pad)
