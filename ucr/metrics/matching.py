"""Matching unlabelled components to reference sources: the score matrix, one-to-one and many-to-one
assignments (per example or fixed for a set), and the scores under an assignment."""


from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize

from ucr.metrics.separation import EPS, energy, si_bss_eval, si_sdr

#: Many-to-one matching is exhaustive over all groupings up to this many components, greedy beyond.
MAX_EXHAUSTIVE_COMPONENTS = 8


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
        cross, gram, energies = [], [], []
        for est, ref in zip(estimates, references, strict=True):
            est = np.atleast_2d(np.asarray(est, dtype=np.float64))
            ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
            est = est - est.mean(-1, keepdims=True)
            ref = ref - ref.mean(-1, keepdims=True)
            cross.append(est @ ref.T)
            gram.append(est @ est.T)
            energies.append(energy(ref))
        self.cross = np.stack(cross)
        self.gram = np.stack(gram)
        self.ref_energy = np.stack(energies)
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
