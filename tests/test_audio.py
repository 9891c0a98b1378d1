import numpy as np
import pytest
import soundfile as sf

from tests.conftest import SR, tone_mix
from ucr import audio


def test_write_read_round_trip_and_resample(tmp_path):
    wave = tone_mix(0.5)
    path = str(tmp_path / "a.wav")
    audio.write(path, wave, SR)
    back, rate = audio.read(path)
    assert rate == SR and back.shape == wave.shape
    np.testing.assert_allclose(back, wave, atol=1e-7)
    down, rate = audio.read(path, sample_rate=16000)
    assert rate == 16000 and down.shape == (1, 8000)


def test_stereo_is_downmixed_and_flac_reads(tmp_path):
    left, right = tone_mix(0.25, seed=1), tone_mix(0.25, seed=2)
    path = str(tmp_path / "s.flac")
    audio.write(path, np.concatenate([left, right]) * 0.5, SR)
    mono, _ = audio.read(path)
    assert mono.shape == (1, left.shape[1])
    np.testing.assert_allclose(mono, (left + right) * 0.25, atol=1e-4)
    stereo, _ = audio.read(path, mono=False)
    assert stereo.shape[0] == 2


def test_resample_preserves_a_tone():
    t = np.arange(44100) / 44100
    wave = np.sin(2 * np.pi * 440 * t).astype(np.float32)[None]
    out = audio.resample(wave, 44100, SR)
    assert out.shape == (1, SR)
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * SR / SR - 440) <= 1


def test_levels():
    assert audio.rms(np.ones((1, 10)) * 0.5) == pytest.approx(0.5)
    assert audio.rms_db(np.ones((1, 10)) * 0.1) == pytest.approx(-20.0)
    assert audio.is_silent(np.zeros((1, 100)))
    assert audio.peak(np.array([[0.1, -0.7]])) == pytest.approx(0.7)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.wav.*empty"):
        audio.read(str(path))


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all" * 20)
    with pytest.raises(ValueError, match=r"notes.wav.*not a readable audio file"):
        audio.read(str(path))


def test_zero_length(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros((0, 1), dtype=np.float32), SR)
    with pytest.raises(ValueError, match=r"zero.wav.*(no samples|not a readable)"):
        audio.read(str(path))


def test_nan_and_inf(tmp_path):
    wave = tone_mix(0.1)
    wave[0, 10] = np.nan
    wave[0, 20] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(str(path), wave.T, SR, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan.wav.*2 sample\(s\) are NaN or infinite"):
        audio.read(str(path))


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_truncated(tmp_path, suffix):
    path = tmp_path / f"full.{suffix}"
    audio.write(str(path), tone_mix(1.0), SR)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.(wav|flac).*(truncated|not a readable)"):
        audio.read(str(cut))


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        audio.read(str(tmp_path / "nope.wav"))


def test_unsupported_extension(tmp_path):
    with pytest.raises(ValueError, match="unsupported extension"):
        audio.write(str(tmp_path / "x.m4a"), tone_mix(0.1), SR)


def test_files_that_do_not_declare_their_length_decode_in_full(tmp_path):
    from tests.conftest import streaming_wav, unknown_length_flac

    wave = tone_mix(1.5)[0]
    flac = tmp_path / "stream.flac"
    flac.write_bytes(unknown_length_flac(wave))
    assert sf.info(str(flac)).frames == audio.UNKNOWN_FRAMES  # what libsndfile reports for such a FLAC
    assert audio.info(str(flac)).frames == wave.size  # counted, not the header's "unknown"
    decoded, rate = audio.read(str(flac))
    assert rate == SR and decoded.shape == (1, wave.size)
    assert np.abs(decoded[0] - wave).max() < 1e-3  # 16-bit
    wav = tmp_path / "stream.wav"
    wav.write_bytes(streaming_wav(wave))
    decoded, _ = audio.read(str(wav))
    assert decoded.shape == (1, wave.size) and np.abs(decoded[0] - wave).max() < 1e-3


def test_max_seconds_stops_decoding_at_the_limit():
    from tests.conftest import unknown_length_flac

    wave = tone_mix(3.0)[0]
    with pytest.raises(audio.TooLongError, match="longer than 2 s") as unknown:
        audio.decode_bytes(unknown_length_flac(wave), name="stream.flac", max_seconds=2.0)
    assert unknown.value.seconds is None
    buffer = __import__("io").BytesIO()
    sf.write(buffer, wave, SR, format="WAV")
    with pytest.raises(audio.TooLongError, match="3.0 s long, more than 2 s") as declared:
        audio.decode_bytes(buffer.getvalue(), name="mix.wav", max_seconds=2.0)
    assert declared.value.seconds == pytest.approx(3.0)
    decoded, _ = audio.decode_bytes(unknown_length_flac(wave), max_seconds=3.5)
    assert decoded.shape == (1, wave.size)
