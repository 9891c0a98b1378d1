"""Separation and generation metrics: pure functions on numpy arrays, tested against closed-form values.

Axis letters used in the docstrings: K model components, S reference sources, L samples, N and M examples,
D feature dimensions, W windows, P candidate groupings.

Modules (everything public is also importable from ``ucr.metrics``)
-------------------------------------------------------------------
* ``separation``: :func:`si_sdr`, :func:`si_sdr_improvement`, :func:`si_bss_eval` (SI-SDR / SI-SIR / SI-SAR).
* ``matching`` (unlabelled components to sources): :func:`score_matrix`, :func:`match_per_example`,
  :func:`match_fixed`, :class:`Assignment`, :func:`apply_assignment`, :func:`matched_scores`.
* ``protocol`` (4 s windows, 2 s hop, skip windows with fewer than two active sources): :func:`window_slices`,
  :func:`active_sources`, :func:`windowed_scores`, :func:`whole_signal_scores`.
* ``summary``: :func:`mean_ci`, :func:`summarize`.
* ``generation``: :func:`gaussian_frechet`, :func:`frechet_distance`, :func:`density_coverage`.

Silence: every energy ratio adds ``EPS`` (1e-12) to numerator and denominator, so silent inputs give finite numbers
rather than errors (a silent estimate of an active reference scores 0 dB under :func:`si_sdr`; a silent reference gives
a very negative score). Protocol code marks silent references as inactive and reports NaN for them instead.
"""

from __future__ import annotations

from ucr.metrics.generation import density_coverage, frechet_distance, gaussian_frechet
from ucr.metrics.matching import (MAX_EXHAUSTIVE_COMPONENTS, Assignment, apply_assignment, match_fixed,
                                  match_per_example, matched_scores, score_matrix)
from ucr.metrics.protocol import (ACTIVITY_THRESHOLD_DB, active_sources, whole_signal_scores, window_slices,
                                  windowed_scores)
from ucr.metrics.separation import EPS, si_bss_eval, si_sdr, si_sdr_improvement
from ucr.metrics.summary import mean_ci, summarize

__all__ = ["ACTIVITY_THRESHOLD_DB", "Assignment", "EPS", "MAX_EXHAUSTIVE_COMPONENTS", "active_sources",
           "apply_assignment", "density_coverage", "frechet_distance", "gaussian_frechet", "match_fixed",
           "match_per_example", "matched_scores", "mean_ci", "score_matrix", "si_bss_eval", "si_sdr",
           "si_sdr_improvement", "summarize", "whole_signal_scores", "window_slices", "windowed_scores"]
