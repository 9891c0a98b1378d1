"""Summaries of per-window / per-example scores: mean and confidence interval."""


from typing import Sequence

import numpy as np
from scipy import stats

def mean_ci(values: np.ndarray | Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of the finite values (NaNs ignored, any shape flattened) with a two-sided
    Student-t confidence interval ``mean ± t_{(1+c)/2, n-1} · s / √n``. Fewer than two values give NaN bounds (and
    no values a NaN mean)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half


def summarize(values: np.ndarray | Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """``{mean, median, ci_low, ci_high, n}`` of the non-NaN values (see :func:`mean_ci`)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    mean, low, high = mean_ci(x, confidence)
    median = float(np.median(x)) if x.size else float("nan")
    return {"mean": mean, "median": median, "ci_low": low, "ci_high": high, "n": int(x.size)}
