"""Experiment tracking for the in-process commands (``ucr train``, ``ucr train-prior``, ``ucr evaluate``).

This package never imports a tracking library. A tracker is found by name among the ``ucr.trackers`` entry points of
the installed distributions; the project registers ``mlflow = "jobs.tracking:MLflowTracker"``, which records a
command's run exactly as the Ray jobs do (experiment ``ucr-<preset>``, a parent run per run name, one child run per
stage, the same metric names). A command is tracked when ``--mlflow`` is given or ``$MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import contextlib
import os
from importlib.metadata import entry_points
from typing import Any, ContextManager, Iterator, Protocol

ENTRY_POINT_GROUP = "ucr.trackers"


class Tracker(Protocol):
    """What a command asks of a tracker."""

    def stage(self, stage: str, config: Any, run_name: str | None) -> ContextManager[str]:
        """Open the run of one stage (``train``, ``train-supervised``, ``prior``, ``evaluate``); yields its id."""

    def log_step(self, step: int, metrics: dict) -> None:
        """Training metrics at ``step`` (loss, lr, validation scores)."""

    def log_training_outcome(self, run_uri: str, stage: str) -> None:
        """After training: the final checkpoint's config, loss and validation curves, the checkpoint."""

    def log_report(self, report: dict, split: str, folder: str) -> None:
        """After evaluation: the report's metrics and files."""


def wanted(flag: bool) -> bool:
    return flag or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def load_tracker(name: str = "mlflow") -> Tracker:
    """The tracker registered as ``name`` in the ``ucr.trackers`` entry points."""
    found = [point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == name]
    if not found:
        raise RuntimeError(f"no experiment tracker named {name!r} is installed (entry points {ENTRY_POINT_GROUP!r}); "
                           f"install the project with `pip install -e .` so that its MLflow tracker is registered, "
                           f"or drop --mlflow and unset MLFLOW_TRACKING_URI")
    return found[0].load()()


@contextlib.contextmanager
def tracked_stage(flag: bool, stage: str, config: Any, run_name: str | None) -> Iterator[Tracker | None]:
    """The tracker inside its stage run when tracking is wanted (:func:`wanted`), else ``None``."""
    if not wanted(flag):
        yield None
        return
    tracker = load_tracker()
    with tracker.stage(stage, config, run_name):
        yield tracker
