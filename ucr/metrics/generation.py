"""Generation metrics on feature sets: the Fréchet distance of Gaussian fits, and density / coverage
(nearest-neighbour precision and recall of Naeem et al.)."""


import warnings

import numpy as np
from scipy import linalg, spatial

def gaussian_frechet(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet (squared 2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Shapes: ``mu [D]``, ``sigma [D, D]``. The value is
    ``|mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^½)``, using ``scipy.linalg.sqrtm``. When the
    square root is not finite (singular products) ``eps`` is added to both diagonals and it is retried; a small
    imaginary part from round-off is discarded (a large one raises). Tiny negative results are clipped to 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2

    def root(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sqrtm warns on singular input; we check the result instead
            return linalg.sqrtm(a @ b)

    covmean = root(sigma1, sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(sigma1.shape[0])
        covmean = root(sigma1 + offset, sigma2 + offset)
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(covmean).max()))
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(value, 0.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to ``features_a [N, D]`` and
    ``features_b [M, D]`` (FID-style; see :func:`gaussian_frechet`). ``[N]`` inputs are treated as ``D = 1``."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features {a.shape} and {b.shape} must be [N, D] with the same D")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least two examples per set to estimate a covariance")
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    return gaussian_frechet(a.mean(0), cov_a, b.mean(0), cov_b, eps=eps)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 2048) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of ``fake [M, D]`` against ``real [N, D]``.

    Each real point ``i`` gets a ball of radius ``r_i`` = Euclidean distance to its ``k``-th nearest *other* real
    point. ``density = (1 / kM) Σ_j #{i : |fake_j - real_i| ≤ r_i}`` (≈ 1 when the sets share a distribution, can
    exceed 1); ``coverage = (1 / N) #{i : some fake point lies in ball i}`` (in [0, 1]). Distances are computed in
    chunks of ``chunk`` fake rows (memory ``O(chunk · N)``).
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    real = real[:, None] if real.ndim == 1 else real
    fake = fake[:, None] if fake.ndim == 1 else fake
    if real.shape[0] <= k:
        raise ValueError(f"need more than k={k} real points, got {real.shape[0]}")
    dist, _ = spatial.cKDTree(real).query(real, k=k + 1)
    radii = dist[:, -1]  # the first neighbour is the point itself
    in_balls = 0
    covered = np.zeros(real.shape[0], dtype=bool)
    for start in range(0, fake.shape[0], chunk):
        inside = spatial.distance.cdist(fake[start:start + chunk], real) <= radii[None, :]  # [m, N]
        in_balls += int(inside.sum())
        covered |= inside.any(0)
    return in_balls / (k * fake.shape[0]), float(covered.mean())
