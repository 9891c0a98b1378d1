"""The whole experiment for a preset, stage after stage, under one MLflow parent run:
data -> encode -> train (-> supervised reference) -> prior -> register -> evaluate.

    python -m jobs.pipeline --preset demo --out runs/demo                      # embedded local Ray
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.pipeline --preset demo --out /shared/runs/demo           # on a cluster

Each stage is resumable: rerunning (or resubmitting with the same --run-name) skips rendered tracks and encoded
shards and resumes training from the latest checkpoint.

With --log-file (what `ucr demo` / `make demo` use) every log line (Ray, the training workers, the stages) goes to
that file; the console shows the stage headings, one progress bar per stage and the results.
"""

from __future__ import annotations

import sys
import threading
import time

from jobs import common, data, encode, evaluate, register, train


def parser():
    parser = common.base_parser(__doc__)
    train.add_scaling_args(parser)
    train.add_validation_args(parser)
    parser.add_argument("--supervised", action="store_true", help="also train the supervised reference")
    parser.add_argument("--skip-prior", action="store_true", help="do not train the prior")
    common.add_evaluation_args(parser)
    parser.add_argument("--log-file", default=None,
                        help="write every log line to this file and keep the console to stage headings, one "
                             "progress bar per stage and the results")
    return parser


class StageBar:
    """One console progress bar for a stage, moved by a background thread: the training step the stage's MLflow
    child run has logged (training stages), else the elapsed time."""

    def __init__(self, console, stage: str, total: int | None, parent_run_id: str) -> None:
        from tqdm import tqdm

        self.stage, self.parent_run_id = stage, parent_run_id
        self.bar = tqdm(total=total, desc=f"  {stage}", unit="step" if total else "s", file=console,
                        mininterval=1.0, dynamic_ncols=False, ncols=90,
                        bar_format=None if total else "{desc}: {elapsed}")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _step(self, client) -> int | None:
        runs = client.search_runs(
            [client.get_run(self.parent_run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.`ucr.stage` = '{self.stage}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            return None
        history = client.get_metric_history(runs[0].info.run_id, "loss")
        return max((m.step for m in history), default=0)

    def _follow(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(common.tracking_uri()) if self.bar.total else None
        while not self.done.wait(2.0):
            try:
                step = self._step(client) if client is not None else None
            except Exception:  # noqa: BLE001 - the bar is cosmetic; the stage's own errors surface elsewhere
                step = None
            if step is not None and step > self.bar.n:
                self.bar.update(min(step, self.bar.total) - self.bar.n)
            else:
                self.bar.refresh()

    def close(self, ok: bool) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        if ok and self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def stage_total(name: str, config) -> int | None:
    """Steps of a training stage (its bar's length); None for the others."""
    return {"train": config.train.steps, "train-supervised": config.train.steps,
            "prior": config.prior.steps}.get(name)


def run(args) -> dict:
    if not getattr(args, "log_file", None):
        return _run(args, console=None)
    with common.console_to_file(args.log_file) as console:
        try:
            return _run(args, console)
        except BaseException as err:
            print(f"\n[pipeline] failed: {type(err).__name__}: {err}\n  full log: {args.log_file}", file=console)
            raise
        finally:
            _stop_ray()  # Ray's exit messages belong in the log, not after the results


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _run(args, console) -> dict:
    """The stages in order. ``console``: where headings, bars and results go when the logs go to a file (None:
    everything on stdout, as before)."""
    out = console or sys.stdout
    config = common.config_from(args)
    root = common.experiment_root(args, config)
    args.parent_run_id = common.parent_run_id(args, config)  # one parent run for all stages
    timings = {}
    results = {}
    stages = [("data", lambda: data.run(args)), ("encode", lambda: encode.run(args)),
              ("train", lambda: train.run(args, kind="decomposer"))]
    if args.supervised:
        stages.append(("train-supervised", lambda: train.run(args, kind="supervised")))
    if not args.skip_prior:
        stages.append(("prior", lambda: train.run(args, kind="prior")))
    stages += [("register", lambda: register.run(args)), ("evaluate", lambda: evaluate.run(args))]
    if console is not None:
        print(f"[pipeline] {config.name} -> {root}; full log: {args.log_file}", file=console)
    for name, stage in stages:
        started = time.monotonic()
        print(f"\n=== stage {name} ===", flush=True)  # also in the log, to find one's way in it
        bar = None
        if console is not None:
            print(f"=== stage {name} ===", file=console)
            bar = StageBar(console, name, stage_total(name, config), args.parent_run_id)
        ok = False
        try:
            results[name] = stage()
            ok = True
        finally:
            if bar is not None:
                bar.close(ok)
        timings[name] = time.monotonic() - started
    import mlflow

    client = mlflow.MlflowClient(common.tracking_uri())
    for name, seconds in timings.items():
        client.log_metric(args.parent_run_id, f"wall_seconds/{name}", seconds)
    client.set_terminated(args.parent_run_id)
    lines = ["", "=== done ==="]
    lines += [f"  {name:18s} {seconds:7.1f} s" for name, seconds in timings.items()]
    evaluated = results.get("evaluate", {})
    if evaluated.get("table"):
        lines += ["", "Separation on the test split (windowed, fixed matching, original stems; mean ± 95% CI, dB):",
                  "", evaluated["table"]]
    if evaluated.get("promotion", {}).get("reason"):
        lines += ["", f"  registry:  {evaluated['promotion']['reason']}"]
    lines += [f"  outputs:   {root}",
              f"  reports:   {common.layout(root)['reports']}/test/report.md",
              f"  MLflow:    {common.tracking_uri()}  (parent run {args.parent_run_id})",
              f"             open the UI: mlflow ui --backend-store-uri {common.tracking_uri()} --port 5000"]
    if console is not None:
        lines.append(f"  full log:  {args.log_file}")
    print("\n".join(lines), file=out, flush=True)
    return {"results": results, "timings": timings, "parent_run_id": args.parent_run_id}


def main() -> None:
    common.run_main(lambda: run(parser().parse_args()))


if __name__ == "__main__":
    main()
