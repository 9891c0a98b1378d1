"""The windowed protocol: 4 s windows with a 2 s hop, windows with fewer than two active sources skipped; and
the whole-signal scores beside it."""


import numpy as np

from ucr.metrics.separation import si_bss_eval, si_sdr

#: Default activity threshold: a source is active in a window when its (zero-mean) RMS exceeds -60 dBFS (1e-3).
ACTIVITY_THRESHOLD_DB = -60.0


def window_slices(
    length: int, sample_rate: int, window_seconds: float | None = 4.0, hop_seconds: float = 2.0
) -> list[slice]:
    """Sample slices of the evaluation windows: full ``window_seconds`` windows every ``hop_seconds``.

    A trailing partial window is dropped; a signal shorter than one window gives one window covering all of it;
    ``window_seconds=None`` gives the whole signal as one window.
    """
    if window_seconds is None:
        return [slice(0, int(length))]
    window = int(round(window_seconds * sample_rate))
    hop = int(round(hop_seconds * sample_rate))
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    if length <= window:
        return [slice(0, int(length))]
    return [slice(start, start + window) for start in range(0, int(length) - window + 1, hop)]


def active_sources(references: np.ndarray, threshold_db: float = ACTIVITY_THRESHOLD_DB) -> np.ndarray:
    """``references [S, L] -> [S]`` bool: a source is active when the RMS of its zero-mean signal exceeds
    ``threshold_db`` dB relative to full scale (default -60 dBFS, i.e. RMS > 1e-3 for audio in [-1, 1]).

    Removing the mean first means a constant (DC) signal counts as silent, consistent with the zero-mean metrics.
    """
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    centred = references - references.mean(-1, keepdims=True)
    rms = np.sqrt((centred ** 2).mean(-1)) if references.shape[-1] else np.zeros(references.shape[0])
    return rms > 10 ** (threshold_db / 20)


def windowed_scores(
    estimates: np.ndarray,
    references: np.ndarray,
    mixture: np.ndarray,
    sample_rate: int,
    window_seconds: float | None = 4.0,
    hop_seconds: float = 2.0,
    min_active: int = 2,
    threshold_db: float = ACTIVITY_THRESHOLD_DB,
) -> dict[str, np.ndarray]:
    """MSDM-style windowed metrics of already matched estimates.

    ``estimates [S, L]``, ``references [S, L]``, ``mixture [L]``. Windows come from :func:`window_slices`; a window
    is kept when at least ``min_active`` sources are active in it (:func:`active_sources`). In a kept window the
    active sources are scored with :func:`si_bss_eval` against the span of the *active* references only; inactive
    sources are NaN. Returns ``si_sdr``, ``si_sir``, ``si_sar``, ``si_sdri`` as ``[W, S]`` over the kept windows,
    ``active [W, S]`` bool, ``starts [W]`` (first sample of each kept window) and ``kept [W_all]`` bool over all
    candidate windows.
    """
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    mixture = np.asarray(mixture, dtype=np.float64).reshape(-1)
    if estimates.shape != references.shape or mixture.shape[0] != references.shape[-1]:
        raise ValueError(f"estimates {estimates.shape}, references {references.shape}, mixture {mixture.shape}")
    n_src = references.shape[0]
    names = ("si_sdr", "si_sir", "si_sar", "si_sdri")
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    active_rows, starts, kept = [], [], []
    for window in window_slices(references.shape[-1], sample_rate, window_seconds, hop_seconds):
        ref = references[:, window]
        active = active_sources(ref, threshold_db)
        keep = int(active.sum()) >= min_active
        kept.append(bool(keep))
        if not keep:
            continue
        row = {name: np.full(n_src, np.nan) for name in names}
        if active.any():
            scores = si_bss_eval(estimates[active][:, window], ref[active])
            for name in ("si_sdr", "si_sir", "si_sar"):
                row[name][active] = scores[name]
            mix = np.broadcast_to(mixture[window], ref[active].shape)
            row["si_sdri"][active] = scores["si_sdr"] - si_sdr(mix, ref[active])
        for name in names:
            rows[name].append(row[name])
        active_rows.append(active)
        starts.append(window.start)
    out = {name: np.asarray(rows[name], dtype=np.float64).reshape(-1, n_src) for name in names}
    out["active"] = np.asarray(active_rows, dtype=bool).reshape(-1, n_src)
    out["starts"] = np.asarray(starts, dtype=np.int64)
    out["kept"] = np.asarray(kept, dtype=bool)
    return out


def whole_signal_scores(
    estimates: np.ndarray,
    references: np.ndarray,
    mixture: np.ndarray,
    threshold_db: float = ACTIVITY_THRESHOLD_DB,
) -> dict[str, np.ndarray]:
    """Whole-chunk variant of :func:`windowed_scores`: one window covering everything, never skipped.

    ``estimates [S, L]``, ``references [S, L]``, ``mixture [L]`` -> ``si_sdr``, ``si_sir``, ``si_sar``, ``si_sdri``,
    ``active`` as ``[S]`` (sources silent over the whole signal are NaN).
    """
    out = windowed_scores(estimates, references, mixture, 1, window_seconds=None, min_active=0,
                          threshold_db=threshold_db)
    return {name: out[name][0] for name in ("si_sdr", "si_sir", "si_sar", "si_sdri", "active")}
