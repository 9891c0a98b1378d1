"""Separation and generation metrics: pure functions on numpy arrays, tested against closed-form values."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scale-invariant SDR in dB (Le Roux et al. 2019) over the last axis: ``[..., L], [..., L] -> [...]``.

    The reference is rescaled by the optimal gain ``<e, r> / <r, r>``; both are zero-mean first.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {estimate.shape} and reference {reference.shape} must have the same shape")
    estimate = estimate - estimate.mean(-1, keepdims=True)
    reference = reference - reference.mean(-1, keepdims=True)
    gain = (estimate * reference).sum(-1, keepdims=True) / ((reference ** 2).sum(-1, keepdims=True) + EPS)
    target = gain * reference
    noise = estimate - target
    return 10 * np.log10(((target ** 2).sum(-1) + EPS) / ((noise ** 2).sum(-1) + EPS))
