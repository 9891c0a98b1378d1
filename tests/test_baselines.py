import numpy as np
import pytest

from ucr import baselines, metrics

SR = 8000


def _tone(freq: float, seconds: float, harmonics: int = 3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, harmonics + 1))


def _gate(length: int, start: float, stop: float, fade: int = 200) -> np.ndarray:
    """Envelope that is 1 between the fractions ``start`` and ``stop`` of the signal, with short linear fades."""
    env = np.zeros(length)
    a, b = int(start * length), int(stop * length)
    env[a:b] = 1.0
    ramp = np.linspace(0, 1, fade)
    if a > 0:
        env[a:a + fade] = ramp
    if b < length:
        env[b - fade:b] = ramp[::-1]
    return env


def _two_part_mix(seconds: float = 2.0):
    """A low tone in the first ~60 % and a high tone in the last ~60 % (overlapping in the middle)."""
    low, high = _tone(150, seconds), _tone(1100, seconds)
    n = low.shape[0]
    sources = np.stack([0.3 * low * _gate(n, 0.0, 0.6), 0.3 * high * _gate(n, 0.4, 1.0)])
    return sources, sources.sum(0)


def test_passthrough_is_the_zero_improvement_floor():
    sources, mix = _two_part_mix()
    est = baselines.passthrough(mix, 2)
    assert est.shape == (2, mix.shape[0])
    np.testing.assert_array_equal(metrics.si_sdr_improvement(est, sources, mix), 0.0)


def test_ideal_ratio_mask_separates_disjoint_spectra():
    seconds = 1.0
    sources = np.stack([0.5 * _tone(200, seconds, harmonics=1), 0.5 * _tone(2500, seconds, harmonics=1)])
    mix = sources.sum(0)
    est = baselines.ideal_ratio_mask(mix, sources, SR, n_fft=512, hop=128)
    assert est.shape == sources.shape
    assert (metrics.si_sdr(est, sources) > 20).all()
    np.testing.assert_allclose(est.sum(0), mix, atol=1e-8)


def test_nmf_separates_tones_with_distinct_spectra_and_activations():
    sources, mix = _two_part_mix()
    est = baselines.nmf_separate(mix, SR, n_components=2, n_fft=512, hop=128, iterations=150, seed=0)
    assert est.shape == (2, mix.shape[0])
    np.testing.assert_allclose(est.sum(0), mix, atol=1e-8)  # soft masks sum to one
    out = metrics.matched_scores(est, sources, mix)
    assert (out["si_sdr"] > 5).all(), out["si_sdr"]
    assert out["assignment"].component_to_source == (0, 1)  # ordered by spectral centroid: low tone first
    again = baselines.nmf_separate(mix, SR, n_components=2, n_fft=512, hop=128, iterations=150, seed=0)
    np.testing.assert_array_equal(est, again)


def test_nmf_output_dtype_length_and_other_divergences():
    _, mix = _two_part_mix(0.5)
    mix32 = mix.astype(np.float32)[:3001]
    est = baselines.nmf_separate(mix32, SR, n_components=3, n_fft=256, hop=64, iterations=20, beta="is")
    assert est.shape == (3, 3001) and est.dtype == np.float32
    np.testing.assert_allclose(est.sum(0), mix32, atol=1e-5)
    short = baselines.nmf_separate(mix[:100], SR, n_components=2, n_fft=512, hop=128, iterations=5,
                                   beta="euclidean")
    assert short.shape == (2, 100)
    np.testing.assert_allclose(short.sum(0), mix[:100], atol=1e-8)
    silent = baselines.nmf_separate(np.zeros(1000), SR, n_components=2, n_fft=256, hop=64)
    np.testing.assert_array_equal(silent, 0.0)


def test_cluster_by_centroid_groups_low_and_high_bases():
    labels = baselines.cluster_by_centroid(np.array([100, 5000, 120, 90, 6000, 5500.0]), 2)
    assert list(labels) == [0, 1, 0, 0, 1, 1]
    assert sorted(baselines.cluster_by_centroid(np.array([3.0, 1.0]), 3)) == [0, 1]


def test_clustered_nmf_separates_a_low_and_a_high_tone_and_sums_to_the_mixture():
    low, high = _tone(110, 2.0), _tone(2200, 2.0) * _gate(int(2.0 * SR), 0.3, 0.8)
    mixture = low + high
    out = baselines.nmf_clustered_separate(mixture, SR, 2, n_bases=16, n_fft=512, hop=128, iterations=100)
    assert out.shape == (2, len(mixture))
    np.testing.assert_allclose(out.sum(0), mixture, atol=1e-6)
    # ordered low -> high; each output improves on the mixture as the estimate by more than 6 dB
    assert metrics.si_sdr(out[0], low) - metrics.si_sdr(mixture, low) > 6
    assert metrics.si_sdr(out[1], high) - metrics.si_sdr(mixture, high) > 6


def test_wiener_post_filter_against_closed_forms():
    """Estimates with disjoint spectra recover the sources (each bin goes whole to one estimate); outputs average
    to the mixture (the mean-composition convention); equal estimates split every bin evenly."""
    sr, L = 8000, 8000
    t = np.arange(L) / sr
    low, high = np.sin(2 * np.pi * 200 * t), 0.5 * np.sin(2 * np.pi * 2000 * t)
    mixture = (low + high) / 2  # mean mixing
    rough = np.stack([low * 0.3 + 0.01 * high, high * 3.0])  # wrong scales, a little leakage
    out = baselines.wiener_post_filter(mixture, rough, sr)
    assert out.shape == (2, L)
    np.testing.assert_allclose(out.mean(0), mixture, atol=1e-6)  # exact composition up to STFT round-off
    inner = slice(1024, L - 1024)  # away from the edges of the STFT
    np.testing.assert_allclose(out[0, inner], low[inner], atol=0.02)  # K x mask x mixture = the source itself
    np.testing.assert_allclose(out[1, inner], high[inner], atol=0.02)
    same = baselines.wiener_post_filter(mixture, np.stack([low, low]), sr)
    np.testing.assert_allclose(same, np.stack([mixture, mixture]), atol=1e-6)  # mask 1/2 each, times K = 2
    assert baselines.post_filter("none", mixture, rough, sr) is rough
    with pytest.raises(ValueError, match="unknown post-filter"):
        baselines.post_filter("median", mixture, rough, sr)
    with pytest.raises(ValueError, match="differ in length"):
        baselines.wiener_post_filter(mixture, rough[:, :-1], sr)
