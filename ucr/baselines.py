"""Classic separation baselines on waveforms (numpy/scipy only).

Axis letters: K output components, S reference sources, L samples, F frequency bins, T frames.

* :func:`passthrough` — the mixture as every estimate (the 0 dB SI-SDR-improvement floor).
* :func:`nmf_separate` — blind NMF with K components on the magnitude STFT, soft masks (the classic blind baseline).
* :func:`nmf_clustered_separate` — the usual stronger blind variant: many NMF bases grouped into K clusters.
* :func:`ideal_ratio_mask` — the oracle ideal ratio mask (the ceiling for masking methods).
* :func:`wiener_post_filter` — the same soft masks built from *estimated* components: a signal-domain post-filter
  for any separator's output (the standard last step in music source separation).

All STFTs are ``scipy.signal.stft`` / ``istft`` with a Hann window of ``n_fft`` samples and ``hop`` samples between
frames; outputs are trimmed or zero-padded back to the input length ``L``. Masks always sum to one in every bin, so
the outputs of the masking methods sum to the mixture up to STFT round-off.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

_BETAS = {"kl": 1.0, "is": 0.0, "euclidean": 2.0}


def _out_dtype(x: np.ndarray) -> np.dtype:
    return np.result_type(x.dtype, np.float32) if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def _stft(x: np.ndarray, sample_rate: int, n_fft: int, hop: int) -> np.ndarray:
    """``[..., L] -> [..., F, T]`` complex; inputs shorter than one frame are zero-padded to ``n_fft`` first."""
    if hop <= 0 or hop > n_fft:
        raise ValueError(f"hop {hop} must be in (0, n_fft={n_fft}]")
    if x.shape[-1] < n_fft:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_fft - x.shape[-1])])
    _, _, spec = signal.stft(x, fs=sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop, axis=-1)
    return spec


def _istft(spec: np.ndarray, sample_rate: int, n_fft: int, hop: int, length: int) -> np.ndarray:
    """``[..., F, T] -> [..., length]`` real, trimmed or zero-padded to ``length``."""
    _, wave = signal.istft(spec, fs=sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop,
                           time_axis=-1, freq_axis=-2)
    if wave.shape[-1] >= length:
        return wave[..., :length]
    return np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, length - wave.shape[-1])])


def _masks_to_waves(spec: np.ndarray, weights: np.ndarray, sample_rate: int, n_fft: int, hop: int,
                    length: int) -> np.ndarray:
    """Soft masks ``w_k / Σ w`` (uniform where every weight is zero) on the mixture ``spec [F, T]``, one per row of
    ``weights [K, F, T]``, then iSTFT -> ``[K, length]``."""
    total = weights.sum(0)
    silent = total <= 0
    safe_total = np.where(silent, 1.0, total)
    out = np.empty((weights.shape[0], length))
    for k in range(weights.shape[0]):
        mask = np.where(silent, 1.0 / weights.shape[0], weights[k] / safe_total)
        out[k] = _istft(mask * spec, sample_rate, n_fft, hop, length)
    return out


def passthrough(mixture: np.ndarray, n_sources: int) -> np.ndarray:
    """The mixture ``[L]`` repeated as the estimate of each of ``n_sources`` sources: ``[S, L]``."""
    mixture = np.asarray(mixture).reshape(-1)
    return np.repeat(mixture[None], n_sources, axis=0)


def _beta_nmf(v: np.ndarray, rank: int, iterations: int, beta: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative-update beta-divergence NMF ``v [F, T] ≈ w [F, R] @ h [R, T]`` (Févotte & Idier 2011).

    Columns of ``w`` are kept summing to one (scale moved into ``h``) so the factorisation is well posed.
    """
    tiny = 1e-12 * max(float(v.max()), 1e-30)
    n_freq, n_frames = v.shape
    w = rng.uniform(0.1, 1.0, (n_freq, rank))
    w /= w.sum(0, keepdims=True)
    h = rng.uniform(0.1, 1.0, (rank, n_frames))
    h *= v.mean() / max(float((w @ h).mean()), tiny)
    for _ in range(iterations):
        model = w @ h + tiny
        if beta == 1.0:
            h *= (w.T @ (v / model)) / (w.sum(0)[:, None] + tiny)
            model = w @ h + tiny
            w *= ((v / model) @ h.T) / (h.sum(1)[None, :] + tiny)
        else:
            h *= (w.T @ (v * model ** (beta - 2))) / (w.T @ model ** (beta - 1) + tiny)
            model = w @ h + tiny
            w *= ((v * model ** (beta - 2)) @ h.T) / (model ** (beta - 1) @ h.T + tiny)
        norm = w.sum(0) + tiny
        w /= norm
        h *= norm[:, None]
    return w, h


def nmf_separate(
    mixture: np.ndarray,
    sample_rate: int,
    n_components: int,
    n_fft: int = 2048,
    hop: int = 512,
    iterations: int = 200,
    seed: int = 0,
    beta: str | float = "kl",
    mask_power: float = 1.0,
) -> np.ndarray:
    """Blind NMF separation of ``mixture [L]`` into ``K = n_components`` waveforms ``[K, L]``.

    The magnitude STFT ``|X| [F, T]`` is factorised as ``W [F, K] @ H [K, T]`` by multiplicative updates on the
    beta divergence (``beta="kl"`` — Kullback-Leibler, default; ``"is"`` Itakura-Saito; ``"euclidean"``; or a
    number), from a uniform random start drawn with ``seed`` (so the result is deterministic for a seed). *One NMF
    basis vector per output* — no clustering: output ``k`` is the Wiener-like soft mask
    ``(W_k H_k)^p / Σ_j (W_j H_j)^p`` (``p = mask_power``) applied to the complex mixture STFT, then the iSTFT,
    trimmed/padded to ``L``. Outputs are ordered by the spectral centroid of their basis vector (lowest first).
    Because the masks sum to one, the outputs sum to the mixture up to STFT round-off.
    """
    mixture = np.asarray(mixture)
    dtype = _out_dtype(mixture)
    x = mixture.astype(np.float64).reshape(-1)
    if n_components < 1:
        raise ValueError("n_components must be at least 1")
    beta_value = float(_BETAS[beta] if isinstance(beta, str) else beta)
    spec = _stft(x, sample_rate, n_fft, hop)
    magnitude = np.abs(spec)
    if not magnitude.any():
        return np.repeat(x[None] / n_components, n_components, axis=0).astype(dtype)
    w, h = _beta_nmf(magnitude, n_components, iterations, beta_value, np.random.default_rng(seed))
    centroid = (np.arange(w.shape[0])[:, None] * w).sum(0) / (w.sum(0) + 1e-30)
    order = np.argsort(centroid, kind="stable")
    w, h = w[:, order], h[order]
    weights = (w.T[:, :, None] * h[:, None, :]) ** mask_power  # [K, F, T]
    return _masks_to_waves(spec, weights, sample_rate, n_fft, hop, x.shape[0]).astype(dtype)


def cluster_by_centroid(centroids: np.ndarray, n_clusters: int, iterations: int = 50) -> np.ndarray:
    """1-D k-means on ``log(centroids [R])`` -> cluster labels ``[R]`` in 0..K-1, ordered from low to high
    frequency; initialised at quantiles, so deterministic. Every cluster keeps at least one basis."""
    values = np.log(np.maximum(np.asarray(centroids, dtype=np.float64), 1e-9))
    R = len(values)
    if n_clusters >= R:
        return np.argsort(np.argsort(values, kind="stable"), kind="stable")
    order = np.argsort(values, kind="stable")
    labels = np.empty(R, dtype=int)
    labels[order] = np.arange(R) * n_clusters // R  # quantile start: equal-count groups along the axis
    for _ in range(iterations):
        centres = np.array([values[labels == k].mean() for k in range(n_clusters)])
        new = np.abs(values[:, None] - centres[None, :]).argmin(1)
        if any(not (new == k).any() for k in range(n_clusters)) or (new == labels).all():
            break
        labels = new
    return labels


def nmf_clustered_separate(
    mixture: np.ndarray,
    sample_rate: int,
    n_components: int,
    n_bases: int = 32,
    n_fft: int = 2048,
    hop: int = 512,
    iterations: int = 200,
    seed: int = 0,
    beta: str | float = "kl",
) -> np.ndarray:
    """Blind NMF with many bases clustered into K sources: ``mixture [L]`` -> ``[K, L]``.

    ``|X| ≈ W [F, R] @ H [R, T]`` with ``R = n_bases`` (KL by default), then the bases are grouped into
    ``K = n_components`` clusters by 1-D k-means on the log spectral centroid of each basis (low/high register:
    bass against drums and cymbals); output k is the soft mask ``Σ_{r in k} W_r H_r / Σ_r W_r H_r`` on the
    complex mixture STFT. Outputs are ordered from low to high centroid and sum to the mixture up to round-off.
    """
    mixture = np.asarray(mixture)
    dtype = _out_dtype(mixture)
    x = mixture.astype(np.float64).reshape(-1)
    if n_components < 1 or n_bases < n_components:
        raise ValueError(f"need 1 <= n_components <= n_bases, got {n_components} and {n_bases}")
    spec = _stft(x, sample_rate, n_fft, hop)
    magnitude = np.abs(spec)
    if not magnitude.any():
        return np.repeat(x[None] / n_components, n_components, axis=0).astype(dtype)
    w, h = _beta_nmf(magnitude, n_bases, iterations, float(_BETAS[beta] if isinstance(beta, str) else beta),
                     np.random.default_rng(seed))
    centroid = (np.arange(1, w.shape[0] + 1)[:, None] * w).sum(0) / (w.sum(0) + 1e-30)
    labels = cluster_by_centroid(centroid, n_components)
    weights = np.stack([w[:, labels == k] @ h[labels == k] for k in range(n_components)])  # [K, F, T]
    return _masks_to_waves(spec, weights, sample_rate, n_fft, hop, x.shape[0]).astype(dtype)


def ideal_ratio_mask(
    mixture: np.ndarray,
    sources: np.ndarray,
    sample_rate: int,
    n_fft: int = 2048,
    hop: int = 512,
    power: float = 2.0,
) -> np.ndarray:
    """Oracle ideal ratio mask: ``mixture [L]``, true ``sources [S, L]`` -> estimates ``[S, L]``.

    Mask ``j`` is ``|S_j|^p / Σ_i |S_i|^p`` (``p = power``; 2 is the Wiener-like power ratio, 1 the magnitude ratio),
    uniform ``1 / S`` in bins where every source is silent, applied to the complex mixture STFT, then iSTFT.
    """
    return _power_ratio_masking(mixture, sources, sample_rate, n_fft, hop, power, "sources")


def wiener_post_filter(
    mixture: np.ndarray,
    components: np.ndarray,
    sample_rate: int,
    n_fft: int = 2048,
    hop: int = 512,
    power: float = 2.0,
) -> np.ndarray:
    """Signal-domain Wiener post-filter: ``mixture [L]``, estimated ``components [K, L]`` -> filtered ``[K, L]``.

    Each output is the mixture's STFT under the soft mask ``|C_k|^p / Σ_j |C_j|^p`` of the estimates (one
    iteration; ``p = 2``: power ratio), so phase and fine detail come from the mixture and only the estimates'
    time-frequency energy is trusted. Outputs are scaled by ``K`` so that their **mean** equals the mixture, the
    project's composition convention (mean mixing; see :mod:`ucr.decomposer`).
    """
    components = np.atleast_2d(np.asarray(components))
    return components.shape[0] * _power_ratio_masking(mixture, components, sample_rate, n_fft, hop, power,
                                                      "components")


def post_filter(name: str, mixture: np.ndarray, components: np.ndarray, sample_rate: int) -> np.ndarray:
    """The separation's post-filter by name (``diffusion.post_filter``, :data:`ucr.config.POST_FILTERS`):
    ``mixture [L]``, ``components [K, L]`` -> ``[K, L]``; ``"none"`` returns the components unchanged."""
    if name == "none":
        return components
    if name == "wiener":
        return wiener_post_filter(mixture, components, sample_rate).astype(np.asarray(components).dtype)
    raise ValueError(f"unknown post-filter {name!r}; choose one of: none, wiener")


def _power_ratio_masking(mixture: np.ndarray, estimates: np.ndarray, sample_rate: int, n_fft: int, hop: int,
                         power: float, what: str) -> np.ndarray:
    """Masks ``|E_k|^p / Σ|E_j|^p`` from ``estimates [K, L]`` on the STFT of ``mixture [L]`` -> ``[K, L]`` (masks
    sum to one in every bin; uniform where every estimate is silent)."""
    mixture = np.asarray(mixture)
    dtype = _out_dtype(mixture)
    x = mixture.astype(np.float64).reshape(-1)
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    if estimates.shape[-1] != x.shape[0]:
        raise ValueError(f"{what} {estimates.shape} and mixture {x.shape} differ in length")
    weights = np.abs(_stft(estimates, sample_rate, n_fft, hop)) ** power
    spec = _stft(x, sample_rate, n_fft, hop)
    return _masks_to_waves(spec, weights, sample_rate, n_fft, hop, x.shape[0]).astype(dtype)
