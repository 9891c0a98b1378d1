"""Scale-invariant separation scores on numpy arrays: SI-SDR, its improvement over the mixture, and the
SI-SDR / SI-SIR / SI-SAR decomposition. ``EPS`` keeps silent inputs finite (see :mod:`ucr.metrics`)."""


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


def si_sdr_improvement(estimate: np.ndarray, reference: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """SI-SDRi in dB: ``si_sdr(estimate, reference) - si_sdr(mixture, reference)``.

    Shapes: ``estimate [..., L]``, ``reference [..., L]``, ``mixture`` broadcastable to the reference (typically
    ``[L]`` against ``[S, L]``); returns ``[...]``. Passing the mixture as the estimate gives exactly 0.
    """
    reference = np.asarray(reference, dtype=np.float64)
    mixture = np.broadcast_to(np.asarray(mixture, dtype=np.float64), reference.shape)
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


def energy(x: np.ndarray) -> np.ndarray:
    return (x ** 2).sum(-1)


def si_bss_eval(estimates: np.ndarray, references: np.ndarray) -> dict[str, np.ndarray]:
    """Scale-invariant bss_eval decomposition: ``estimates [S, L], references [S, L] -> {name: [S]}`` in dB.

    Estimate ``j`` is split (after removing each signal's mean, in float64) into

    * ``e_target`` — orthogonal projection onto reference ``j`` (same gain as :func:`si_sdr`),
    * ``e_interf`` — projection onto the span of all ``S`` references, minus ``e_target``,
    * ``e_artif``  — the estimate minus its projection onto that span,

    and ``si_sdr = 10 log10(|e_t|² / |e_i + e_a|²)``, ``si_sir = 10 log10(|e_t|² / |e_i|²)``,
    ``si_sar = 10 log10(|e_t + e_i|² / |e_a|²)``. ``EPS`` is added to every numerator and denominator; the span is
    computed with a pseudo-inverse of the references' Gram matrix, so silent or linearly dependent references do not
    crash. With a single reference ``si_sdr`` equals :func:`si_sdr` and ``si_sir`` is very large (no interference).
    """
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if estimates.shape != references.shape or estimates.ndim != 2:
        raise ValueError(f"estimates {estimates.shape} and references {references.shape} must both be [S, L]")
    estimates = estimates - estimates.mean(-1, keepdims=True)
    references = references - references.mean(-1, keepdims=True)

    ref_energy = energy(references)  # [S]
    cross = estimates @ references.T  # [S(est), S(ref)]
    diag = np.diagonal(cross)
    e_target = (diag / (ref_energy + EPS))[:, None] * references  # [S, L]
    # Projection onto span(references): coefficients c = <e, R> G^+ with G = R R^T.
    gram = references @ references.T
    scale = max(float(np.trace(gram)), EPS)
    coeffs = cross @ np.linalg.pinv(gram / scale, rcond=1e-10, hermitian=True) / scale  # [S, S]
    e_span = coeffs @ references
    e_interf = e_span - e_target
    e_artif = estimates - e_span

    target_energy = energy(e_target)
    return {
        "si_sdr": 10 * np.log10((target_energy + EPS) / (energy(e_interf + e_artif) + EPS)),
        "si_sir": 10 * np.log10((target_energy + EPS) / (energy(e_interf) + EPS)),
        "si_sar": 10 * np.log10((energy(e_span) + EPS) / (energy(e_artif) + EPS)),
    }
