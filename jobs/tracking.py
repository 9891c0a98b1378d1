"""The MLflow tracker of the in-process ``ucr`` commands (entry point ``ucr.trackers: mlflow``; see ucr/tracking.py).

It records a command as the Ray jobs record the same stage: the run layout of :func:`jobs.common.stage_run`, the
step metrics of :class:`jobs.train.StepLogger`, the outcome of :func:`jobs.train.log_outcome` and the report of
:func:`jobs.evaluate.log_report`.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any, Iterator

from jobs import common


class MLflowTracker:
    def __init__(self) -> None:
        self._logger = None

    @contextlib.contextmanager
    def stage(self, stage: str, config: Any, run_name: str | None) -> Iterator[str]:
        from jobs.train import StepLogger

        args = argparse.Namespace(run_name=run_name, experiment=None, parent_run_id=None)
        with common.stage_run(args, config, stage) as child:
            self._logger = StepLogger(common.tracking_uri(), child.info.run_id, prefix="")
            print(f"[mlflow] {stage}: run {child.info.run_id} in {common.tracking_uri()}")
            yield child.info.run_id
        self._logger = None

    def log_step(self, step: int, metrics: dict) -> None:
        if self._logger is not None:
            self._logger.log(step, metrics)

    def log_training_outcome(self, run_uri: str, stage: str) -> None:
        from jobs.train import log_outcome

        log_outcome(run_uri, stage)

    def log_report(self, report: dict, split: str, folder: str) -> None:
        from jobs.evaluate import log_report

        log_report(report, split, folder)
