"""Separation and generation metrics: pure functions on numpy arrays, tested against closed-form values.

Axis letters used in the docstrings: K model components, S reference sources, L samples, N and M examples,
D feature dimensions, W windows, P candidate groupings.

Contents
--------
* Separation: :func:`si_sdr`, :func:`si_sdr_improvement`, :func:`si_bss_eval` (SI-SDR / SI-SIR / SI-SAR).
* Matching unlabelled components to sources: :func:`score_matrix`, :func:`match_per_example`, :func:`match_fixed`,
  :class:`Assignment`, :func:`apply_assignment`, :func:`matched_scores`.
* Windowed protocol (4 s windows, 2 s hop, skip windows with fewer than two active sources):
  :func:`window_slices`, :func:`active_sources`, :func:`windowed_scores`, :func:`whole_signal_scores`.
* Summaries: :func:`mean_ci`, :func:`summarize`.
* Generation: :func:`gaussian_frechet`, :func:`frechet_distance`, :func:`density_coverage`.

Silence: every energy ratio adds ``EPS`` (1e-12) to numerator and denominator, so silent inputs give finite numbers
rather than errors (a silent estimate of an active reference scores 0 dB under :func:`si_sdr`; a silent reference gives
a very negative score). Protocol code marks silent references as inactive and reports NaN for them instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import linalg, optimize, spatial, stats

EPS = 1e-12

#: Many-to-one matching is exhaustive over all groupings up to this many components, greedy beyond.
MAX_EXHAUSTIVE_COMPONENTS = 8

#: Default activity threshold: a source is active in a window when its (zero-mean) RMS exceeds -60 dBFS (1e-3).
ACTIVITY_THRESHOLD_DB = -60.0


# ----------------------------------------------------------------------------------------------------------------------
# Scale-invariant separation metrics
# ----------------------------------------------------------------------------------------------------------------------


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


def _energy(x: np.ndarray) -> np.ndarray:
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

    ref_energy = _energy(references)  # [S]
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

    target_energy = _energy(e_target)
    return {
        "si_sdr": 10 * np.log10((target_energy + EPS) / (_energy(e_interf + e_artif) + EPS)),
        "si_sir": 10 * np.log10((target_energy + EPS) / (_energy(e_interf) + EPS)),
        "si_sar": 10 * np.log10((_energy(e_span) + EPS) / (_energy(e_artif) + EPS)),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Matching unlabelled components to reference sources
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """Which source each model component is credited to.

    ``component_to_source[k]`` is the source index of component ``k`` (``-1``: the component is dropped). The
    estimate of a source is the sum of its components; a source with no component is *unmatched* (scored NaN).
    """

    component_to_source: tuple[int, ...]
    n_sources: int

    def __post_init__(self) -> None:
        values = tuple(int(v) for v in self.component_to_source)
        object.__setattr__(self, "component_to_source", values)
        if any(v < -1 or v >= self.n_sources for v in values):
            raise ValueError(f"component_to_source {values} out of range for {self.n_sources} sources")

    @property
    def n_components(self) -> int:
        return len(self.component_to_source)

    @property
    def unmatched_sources(self) -> tuple[int, ...]:
        used = set(self.component_to_source)
        return tuple(s for s in range(self.n_sources) if s not in used)

    def as_array(self) -> np.ndarray:
        """``[K]`` int array."""
        return np.asarray(self.component_to_source, dtype=np.int64)


def apply_assignment(
    estimates: np.ndarray, assignment: Assignment | Sequence[int] | np.ndarray, n_sources: int | None = None
) -> np.ndarray:
    """Per-source estimates ``[S, L]`` from components ``[K, L]``: the sum of each source's components.

    Unmatched sources get zeros; components mapped to ``-1`` are dropped. ``n_sources`` defaults to the
    assignment's when an :class:`Assignment` is given (and is required for a plain ``[K]`` int array).
    """
    estimates = np.asarray(estimates)
    if isinstance(assignment, Assignment):
        n_sources = assignment.n_sources if n_sources is None else n_sources
        mapping = assignment.as_array()
    else:
        if n_sources is None:
            raise ValueError("n_sources is required when the assignment is a plain array")
        mapping = np.asarray(assignment, dtype=np.int64)
    if mapping.shape != (estimates.shape[0],):
        raise ValueError(f"assignment of {mapping.shape} for {estimates.shape[0]} components")
    out = np.zeros((n_sources,) + estimates.shape[1:], dtype=np.result_type(estimates.dtype, np.float32))
    for k, s in enumerate(mapping):
        if s >= 0:
            out[s] += estimates[k]
    return out


def score_matrix(estimates: np.ndarray, references: np.ndarray) -> np.ndarray:
    """SI-SDR of every component against every source: ``[K, L], [S, L] -> [K, S]`` in dB."""
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if estimates.shape[-1] != references.shape[-1]:
        raise ValueError(f"estimates {estimates.shape} and references {references.shape} differ in length")
    return np.stack([si_sdr(np.broadcast_to(e, references.shape), references) for e in estimates])


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    """NaN-free copy for the Hungarian solver: a NaN (undefined score) counts as far below every real one."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).all():
        return np.zeros_like(scores)
    floor = np.nanmin(scores) - 1e3
    return np.where(np.isnan(scores), floor, scores)


def _one_to_one(scores: np.ndarray) -> Assignment:
    """Hungarian matching maximising the summed score; with ``K > S`` only ``S`` components get a source."""
    n_comp, n_src = scores.shape
    rows, cols = optimize.linear_sum_assignment(_finite_scores(scores), maximize=True)
    mapping = np.full(n_comp, -1, dtype=np.int64)
    mapping[rows] = cols
    return Assignment(tuple(mapping), n_src)


def _nan_mean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaNs, NaN (no warning) where every value is NaN."""
    valid = ~np.isnan(x)
    count = valid.sum(axis)
    total = np.where(valid, x, 0.0).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _scores_only_many_to_one(scores: np.ndarray) -> Assignment:
    """Approximate grouping without waveforms: Hungarian picks one component per source, every other component
    joins the source it scores best against on its own."""
    base = _one_to_one(scores).as_array()
    filled = _finite_scores(scores)
    for k in np.flatnonzero(base < 0):
        base[k] = int(np.argmax(filled[k]))
    return Assignment(tuple(base), scores.shape[1])


class _SumStats:
    """Inner products that give the SI-SDR of any sum of components in closed form, for ``N`` examples.

    ``cross [N, K, S] = <e_k, r_s>``, ``gram [N, K, K] = <e_k, e_j>``, ``ref_energy [N, S] = <r_s, r_s>`` (all on
    zero-mean float64 signals). References with (near) zero energy are excluded from the objective (NaN).
    """

    def __init__(self, estimates: Sequence[np.ndarray], references: Sequence[np.ndarray]):
        cross, gram, energy = [], [], []
        for est, ref in zip(estimates, references, strict=True):
            est = np.atleast_2d(np.asarray(est, dtype=np.float64))
            ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
            est = est - est.mean(-1, keepdims=True)
            ref = ref - ref.mean(-1, keepdims=True)
            cross.append(est @ ref.T)
            gram.append(est @ est.T)
            energy.append(_energy(ref))
        self.cross = np.stack(cross)
        self.gram = np.stack(gram)
        self.ref_energy = np.stack(energy)
        self.silent = self.ref_energy <= EPS * 1e3

    def group_scores(self, membership: np.ndarray) -> np.ndarray:
        """Mean over examples of the SI-SDR of each group sum against each source.

        ``membership [P, G, K]`` (0/1: component k in group g of candidate p) -> ``[P, G, S]``.
        """
        a = np.einsum("pgk,nks->pngs", membership, self.cross)
        e2 = np.einsum("pgk,nkj,pgj->png", membership, self.gram, membership)[..., None]
        rr = self.ref_energy[None, :, None, :]
        gain = a / (rr + EPS)
        target = gain ** 2 * rr
        noise = np.maximum(e2 - 2 * gain * a + target, 0.0)
        sdr = 10 * np.log10((target + EPS) / (noise + EPS))
        sdr = np.where(self.silent[None, :, None, :], np.nan, sdr)
        return _nan_mean(sdr, axis=1)


def _partitions(n_items: int, n_blocks: int) -> np.ndarray:
    """All ways to split ``n_items`` labelled items into exactly ``n_blocks`` unlabelled non-empty groups, as
    restricted-growth label strings ``[P, n_items]`` (item 0 always in group 0; a new group opens at most one
    label above the largest so far)."""
    out: list[list[int]] = []

    def extend(prefix: list[int], used: int) -> None:
        remaining = n_items - len(prefix)
        if remaining == 0:
            if used == n_blocks:
                out.append(list(prefix))
            return
        if n_blocks - used > remaining:
            return
        for label in range(min(used + 1, n_blocks)):
            extend(prefix + [label], max(used, label + 1))

    extend([], 0)
    return np.asarray(out, dtype=np.int64).reshape(len(out), n_items)


def _best_grouping(stats: _SumStats, n_sources: int) -> Assignment:
    """Exhaustive many-to-one search: every partition of the K components into S groups, each partition's groups
    matched to sources by the Hungarian method on the group-sum SI-SDR; the best mean SI-SDR wins (first on ties)."""
    n_comp = stats.gram.shape[1]
    labels = _partitions(n_comp, n_sources)
    eye = np.eye(n_sources)
    best_value, best_mapping = -np.inf, None
    chunk = max(1, int(4e6 // max(1, stats.cross.shape[0] * n_sources * n_sources)))
    for start in range(0, len(labels), chunk):
        block = labels[start:start + chunk]
        membership = eye[block].transpose(0, 2, 1)  # [P, G, K]
        scores = stats.group_scores(membership)  # [P, G, S]
        for p in range(len(block)):
            filled = _finite_scores(scores[p])
            rows, cols = optimize.linear_sum_assignment(filled, maximize=True)
            value = filled[rows, cols].mean()
            if value > best_value:
                group_to_source = np.empty(n_sources, dtype=np.int64)
                group_to_source[rows] = cols
                best_value, best_mapping = value, group_to_source[block[p]]
    return Assignment(tuple(best_mapping), n_sources)


def _greedy_grouping(stats: _SumStats, n_sources: int) -> Assignment:
    """Greedy many-to-one for many components: Hungarian seeds one component per source, then the remaining
    components (best individual score first) each join the source whose group-sum SI-SDR mean rises most."""
    n_comp = stats.gram.shape[1]
    single = stats.group_scores(np.eye(n_comp)[None])[0]  # [K, S]
    mapping = _one_to_one(single).as_array()
    order = sorted(np.flatnonzero(mapping < 0), key=lambda k: -np.nanmax(_finite_scores(single)[k]))
    for k in order:
        candidates = []
        for s in range(n_sources):
            trial = mapping.copy()
            trial[k] = s
            candidates.append(trial)
        # Evaluate each candidate's S source groups (dropped components are in no group).
        membership = np.stack([(np.asarray(c)[None, :] == np.arange(n_sources)[:, None]) for c in candidates])
        scores = stats.group_scores(membership.astype(np.float64))  # [S candidates, S groups(=sources), S]
        diag = _finite_scores(np.diagonal(scores, axis1=1, axis2=2))
        mapping = candidates[int(np.argmax(diag.mean(1)))]
    return Assignment(tuple(mapping), n_sources)


def _match(
    scores: np.ndarray, estimates: Sequence[np.ndarray] | None, references: Sequence[np.ndarray] | None
) -> Assignment:
    n_comp, n_src = scores.shape
    if n_comp <= n_src:
        return _one_to_one(scores)
    if estimates is None or references is None:
        return _scores_only_many_to_one(scores)
    stats = _SumStats(estimates, references)
    if n_comp <= MAX_EXHAUSTIVE_COMPONENTS:
        return _best_grouping(stats, n_src)
    return _greedy_grouping(stats, n_src)


def match_per_example(
    scores: np.ndarray, estimates: np.ndarray | None = None, references: np.ndarray | None = None
) -> Assignment:
    """Best assignment of one example's components to its sources.

    ``scores [K, S]`` is :func:`score_matrix` of the example's ``estimates [K, L]`` against ``references [S, L]``.

    Rule (the same in :func:`match_fixed`):

    * ``K == S``: a permutation maximising the summed SI-SDR (Hungarian, ``scipy.optimize.linear_sum_assignment``).
    * ``K < S``: the same one-to-one matching on ``K`` of the sources; the other ``S - K`` sources are unmatched
      (scored NaN and counted).
    * ``K > S`` (many-to-one): every component goes to exactly one source, every source gets at least one, and a
      source's estimate is the sum of its components; the grouping maximising the mean over sources of the SI-SDR of
      the summed estimates is chosen. Exhaustive (all set partitions into ``S`` groups, each matched to sources by
      Hungarian) for ``K <= MAX_EXHAUSTIVE_COMPONENTS`` (8), greedy beyond. This needs ``estimates`` and
      ``references``; with scores alone it falls back to Hungarian for one component per source plus each remaining
      component joining the source it scores best against on its own.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if estimates is None or references is None:
        return _match(scores, None, None)
    return _match(scores, [estimates], [references])


def match_fixed(
    score_matrices: Sequence[np.ndarray],
    estimates: Sequence[np.ndarray] | None = None,
    references: Sequence[np.ndarray] | None = None,
) -> Assignment:
    """One assignment for a whole set of examples — what a user of the model gets.

    ``score_matrices``: ``N`` arrays ``[K, S]``; the same rule as :func:`match_per_example` applied to the mean over
    examples (NaNs ignored): Hungarian on the mean score matrix, and for ``K > S`` the grouping maximising the mean
    over examples and sources of the group-sum SI-SDR (needs the ``N`` ``estimates [K, L_n]`` and
    ``references [S, L_n]``; sources silent in an example are left out of that example's mean).
    """
    if len(score_matrices) == 0:
        raise ValueError("match_fixed needs at least one score matrix")
    mean_scores = _nan_mean(np.stack([np.asarray(m, dtype=np.float64) for m in score_matrices]), axis=0)
    return _match(mean_scores, estimates, references)


def matched_scores(
    estimates: np.ndarray,
    references: np.ndarray,
    mixture: np.ndarray | None = None,
    assignment: Assignment | None = None,
) -> dict:
    """Match (per example unless ``assignment`` is given) and score one example.

    ``estimates [K, L]``, ``references [S, L]``, optional ``mixture [L]`` -> dict with ``si_sdr``, ``si_sir``,
    ``si_sar`` (and ``si_sdri`` when the mixture is given) as ``[S]`` arrays (NaN for unmatched sources), plus
    ``assignment`` (:class:`Assignment`) and ``n_unmatched`` (int).
    """
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if assignment is None:
        assignment = match_per_example(score_matrix(estimates, references), estimates, references)
    per_source = apply_assignment(estimates, assignment, references.shape[0])
    out: dict = dict(si_bss_eval(per_source, references))
    if mixture is not None:
        out["si_sdri"] = out["si_sdr"] - si_sdr(np.broadcast_to(mixture, references.shape), references)
    unmatched = list(assignment.unmatched_sources)
    for key in ("si_sdr", "si_sir", "si_sar", "si_sdri"):
        if key in out:
            out[key][unmatched] = np.nan
    out["assignment"] = assignment
    out["n_unmatched"] = len(unmatched)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Windowed protocol
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Generation metrics
# ----------------------------------------------------------------------------------------------------------------------


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
