import numpy as np
import pytest

from ucr import metrics as m


def _orthonormal(n: int, length: int, seed: int = 0) -> np.ndarray:
    """``[n, length]`` zero-mean rows, mutually orthogonal, unit energy."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(length, n + 1))
    x[:, 0] = 1.0  # orthogonal to the constant vector => zero mean
    q, _ = np.linalg.qr(x)
    return q[:, 1:].T


# --- SI-SDR / bss_eval ------------------------------------------------------------------------------------------------


def test_si_sdr_improvement_is_zero_for_the_mixture_and_positive_for_the_truth():
    s = _orthonormal(2, 1000)
    mix = s.sum(0)
    np.testing.assert_array_equal(m.si_sdr_improvement(np.stack([mix, mix]), s, mix), 0.0)
    assert (m.si_sdr_improvement(s + 0.01 * s[::-1], s, mix) > 30).all()


def test_si_sir_of_scaled_leak_is_exact():
    s = _orthonormal(2, 2000)
    e1, e2, g = 4.0, 0.25, 0.3
    refs = np.stack([np.sqrt(e1) * s[0], np.sqrt(e2) * s[1]])
    estimates = np.stack([refs[0] + g * refs[1], refs[1]])
    out = m.si_bss_eval(estimates, refs)
    expected = 10 * np.log10(e1 / (g ** 2 * e2))
    np.testing.assert_allclose(out["si_sir"][0], expected, rtol=1e-9)
    np.testing.assert_allclose(out["si_sdr"][0], expected, rtol=1e-9)  # no artefacts: SDR == SIR
    assert out["si_sar"][0] > 100


def test_si_sar_and_sdr_with_noise_orthogonal_to_all_references():
    q = _orthonormal(3, 2000, seed=1)
    refs, noise = 2.0 * q[:2], q[2]
    estimates = refs + 0.5 * noise  # |e_t|² = 4, |e_a|² = 0.25
    out = m.si_bss_eval(estimates, refs)
    np.testing.assert_allclose(out["si_sar"], 10 * np.log10(4 / 0.25), rtol=1e-9)
    np.testing.assert_allclose(out["si_sdr"], 10 * np.log10(4 / 0.25), rtol=1e-9)
    assert (out["si_sir"] > 100).all()


def test_si_bss_eval_matches_si_sdr_with_one_reference_and_is_scale_invariant():
    rng = np.random.default_rng(3)
    ref, est = rng.normal(size=(1, 500)), rng.normal(size=(1, 500))
    est = est + 2 * ref
    out = m.si_bss_eval(est, ref)
    np.testing.assert_allclose(out["si_sdr"], m.si_sdr(est, ref), rtol=1e-12)
    refs = rng.normal(size=(3, 500))
    ests = refs + 0.3 * rng.normal(size=(3, 500)) + 0.2 * refs[[1, 2, 0]]
    a = m.si_bss_eval(ests, refs)
    b = m.si_bss_eval(ests * np.array([[7.0], [-0.01], [3e3]]) + 5.0, refs)  # gains and DC offset
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-9)
    np.testing.assert_allclose(a["si_sdr"], m.si_sdr(ests, refs), rtol=1e-9)


def test_silence_does_not_crash():
    refs = np.zeros((2, 100))
    refs[0] = np.sin(np.arange(100))
    out = m.si_bss_eval(np.zeros((2, 100)), refs)
    assert all(np.isfinite(v).all() for v in out.values())


# --- matching ---------------------------------------------------------------------------------------------------------


def _example(seed: int, n_src: int = 3, length: int = 800):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=(n_src, length))
    comps = refs + 0.2 * rng.normal(size=refs.shape) + 0.1 * refs[np.roll(np.arange(n_src), 1)]
    return comps, refs, refs.sum(0)


def test_matching_is_invariant_to_component_order():
    comps, refs, mix = _example(0)
    base = m.matched_scores(comps, refs, mix)
    perm = np.array([2, 0, 1])
    shuffled = m.matched_scores(comps[perm], refs, mix)
    for key in ("si_sdr", "si_sir", "si_sar", "si_sdri"):
        np.testing.assert_allclose(base[key], shuffled[key], rtol=1e-12)
    assert shuffled["assignment"].component_to_source == (2, 0, 1)
    assert base["n_unmatched"] == 0


def test_fixed_and_per_example_differ_when_one_example_is_swapped():
    examples = [_example(seed) for seed in range(3)]
    comps, refs, _ = zip(*examples)
    comps = [c.copy() for c in comps]
    comps[1] = comps[1][[1, 0, 2]]  # in example 1 the model swapped its first two components
    scores = [m.score_matrix(c, r) for c, r in zip(comps, refs)]
    fixed = m.match_fixed(scores)
    assert fixed.component_to_source == (0, 1, 2)
    per = m.match_per_example(scores[1])
    assert per.component_to_source == (1, 0, 2)
    fixed_sdr = m.matched_scores(comps[1], refs[1], assignment=fixed)["si_sdr"]
    per_sdr = m.matched_scores(comps[1], refs[1])["si_sdr"]
    assert (per_sdr[:2] > fixed_sdr[:2] + 10).all()
    np.testing.assert_allclose(per_sdr[2], fixed_sdr[2])


def test_many_to_one_recovers_a_source_split_in_two():
    rng = np.random.default_rng(1)
    length = 1000
    refs = rng.normal(size=(2, length))
    first = np.arange(length) < length // 2
    comps = np.stack([refs[1] + 0.01 * rng.normal(size=length), refs[0] * first, refs[0] * ~first])
    scores = m.score_matrix(comps, refs)
    assignment = m.match_per_example(scores, comps, refs)
    assert assignment.component_to_source == (1, 0, 0)
    out = m.matched_scores(comps, refs)
    assert (out["si_sdr"] > 30).all() and out["n_unmatched"] == 0
    np.testing.assert_allclose(m.apply_assignment(comps, assignment)[0], refs[0])
    # Fixed many-to-one over two examples (the second with the components in another order).
    fixed = m.match_fixed([scores, m.score_matrix(comps[[2, 0, 1]], refs)], [comps, comps[[2, 0, 1]]], [refs, refs])
    assert sorted(fixed.component_to_source) == [0, 0, 1]
    # Without waveforms the score-only fallback still gives every component a source.
    approx = m.match_per_example(scores)
    assert approx.component_to_source == (1, 0, 0)


def test_greedy_many_to_one_beyond_the_exhaustive_limit():
    rng = np.random.default_rng(2)
    length = 900
    refs = rng.normal(size=(2, length))
    pieces = np.array_split(np.arange(length), 5)
    comps = []
    for s in range(2):
        for idx in pieces:
            c = np.zeros(length)
            c[idx] = refs[s, idx]
            comps.append(c)
    comps = np.stack(comps)  # K = 10 > MAX_EXHAUSTIVE_COMPONENTS
    out = m.matched_scores(comps, refs)
    assert out["assignment"].component_to_source == (0,) * 5 + (1,) * 5
    assert (out["si_sdr"] > 100).all()


def test_fewer_components_than_sources_reports_nan():
    comps, refs, mix = _example(4)
    out = m.matched_scores(comps[[2, 0]], refs, mix)
    assert out["n_unmatched"] == 1 and out["assignment"].unmatched_sources == (1,)
    assert np.isnan(out["si_sdr"][1]) and np.isfinite(out["si_sdr"][[0, 2]]).all()
    applied = m.apply_assignment(comps[[2, 0]], out["assignment"].as_array(), 3)
    np.testing.assert_array_equal(applied[1], 0.0)


# --- windows ----------------------------------------------------------------------------------------------------------


def test_window_slices():
    assert m.window_slices(1000, 100) == [slice(0, 400), slice(200, 600), slice(400, 800), slice(600, 1000)]
    assert m.window_slices(1099, 100)[-1] == slice(600, 1000)
    assert m.window_slices(300, 100) == [slice(0, 300)]
    assert m.window_slices(1000, 100, window_seconds=None) == [slice(0, 1000)]


def test_active_sources_threshold():
    t = np.arange(1000)
    refs = np.stack([np.sin(t), 2e-3 * np.sin(t), 5e-4 * np.sin(t), np.full(1000, 0.5)])
    np.testing.assert_array_equal(m.active_sources(refs), [True, True, False, False])


def test_windowed_scores_skip_windows_and_mark_inactive_sources():
    rate, length = 100, 1000  # 10 s -> windows at 0, 2, 4, 6 s
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(2, length))
    refs[1, :500] = 0.0  # source 1 silent for the first 5 s
    est = refs + 0.1 * rng.normal(size=refs.shape)
    mix = refs.sum(0)
    out = m.windowed_scores(est, refs, mix, rate)
    np.testing.assert_array_equal(out["kept"], [False, True, True, True])
    np.testing.assert_array_equal(out["starts"], [200, 400, 600])
    assert out["si_sdr"].shape == (3, 2) and np.isfinite(out["si_sdr"]).all()
    window = slice(600, 1000)
    np.testing.assert_allclose(out["si_sdr"][2], m.si_sdr(est[:, window], refs[:, window]), rtol=1e-9)
    mix_sdr = m.si_sdr(np.stack([mix[window]] * 2), refs[:, window])
    np.testing.assert_allclose(out["si_sdri"][2], out["si_sdr"][2] - mix_sdr, rtol=1e-9)

    relaxed = m.windowed_scores(est, refs, mix, rate, min_active=1)
    assert relaxed["kept"].all()
    assert np.isnan(relaxed["si_sdr"][0, 1]) and np.isfinite(relaxed["si_sdr"][0, 0])
    np.testing.assert_array_equal(relaxed["active"][0], [True, False])

    whole = m.whole_signal_scores(est, refs, mix)
    np.testing.assert_allclose(whole["si_sdr"], m.si_sdr(est, refs), rtol=1e-9)
    np.testing.assert_allclose(whole["si_sdri"], m.si_sdr_improvement(est, refs, mix), rtol=1e-9)


# --- summaries --------------------------------------------------------------------------------------------------------


def test_mean_ci_of_standard_normal_samples():
    n = 400
    x = np.random.default_rng(0).normal(size=n)
    mean, low, high = m.mean_ci(x)
    assert low < 0 < high
    assert (high - low) / 2 == pytest.approx(1.96 / np.sqrt(n), rel=0.1)
    assert m.mean_ci(np.concatenate([x, [np.nan, np.nan]])) == (mean, low, high)
    summary = m.summarize(np.concatenate([x, [np.nan]]))
    assert summary["n"] == n and summary["mean"] == mean and summary["ci_low"] == low
    assert summary["median"] == pytest.approx(np.median(x))
    one = m.summarize([3.0])
    assert one["mean"] == 3.0 and np.isnan(one["ci_low"])


# --- generation -------------------------------------------------------------------------------------------------------


def test_gaussian_frechet_closed_form():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert m.gaussian_frechet(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]  # rotating both keeps the distance
    value = m.gaussian_frechet(rot @ mu1, rot @ np.diag(a) @ rot.T, rot @ mu2, rot @ np.diag(b) @ rot.T)
    assert value == pytest.approx(expected, rel=1e-7)
    singular = np.diag([1.0, 0.0, 0.0])
    assert m.gaussian_frechet(mu1, singular, mu1, singular) == pytest.approx(0.0, abs=1e-5)


def test_frechet_distance_of_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 4))
    assert m.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    d = np.array([1.0, -2.0, 0.5, 0.0])
    y = rng.normal(size=(4000, 4)) + d
    assert m.frechet_distance(x, y) == pytest.approx(d @ d, abs=0.15)


def test_density_and_coverage():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3))
    density, coverage = m.density_coverage(real, fake, k=5)
    assert density == pytest.approx(1.0, abs=0.15)
    assert coverage > 0.9
    density, coverage = m.density_coverage(real, fake + 20.0, k=5)
    assert density == 0.0 and coverage == 0.0
