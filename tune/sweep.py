"""Hyperparameter sweeps: Ray Tune + Optuna (TPE, seeded) + ASHA early stopping on a quick validation separation
score, one MLflow child run per trial under a sweep parent run, and the best trial registered and evaluated.

    python -m tune.sweep --space tune/spaces/demo.yaml --trials 8 [--concurrency 2] [--address ...]
    ray job submit --address $RAY_DASHBOARD --working-dir . -- python -m tune.sweep --space tune/spaces/demo.yaml

Each trial trains with the same TorchTrainer builder as ``jobs.train`` (``jobs.train.make_torch_trainer``) and reports
a validation metric every ``eval.every`` steps; ASHA compares trials on it, not on the training loss:

- ``stage: decomposer`` (default): ``val_si_sdri``, SI-SDRi of whole chunks on a fixed validation subset with few
  sampler steps (K, learning rate, U-Net size, dropout, latent normalisation, EMA, crop length, ...);
- ``stage: prior``: ``val_prior_loss``, the masked prior's held-out denoising loss on one fixed mask distribution,
  over a frozen decomposer (``--decomposer``; the all-masked probability, learning rate, size, ...).

An interrupted sweep resumes (``Tuner.restore``) when run again with the same ``--name``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jobs import common, data, encode, evaluate, register
from jobs import train as train_job
from ucr import storage
from ucr.config import load_config, parse_override

SAMPLERS = ("choice", "uniform", "loguniform", "randint")
# what a trial trains -> the validation metric it reports by default, and its direction
STAGE_METRICS = {"decomposer": ("val_si_sdri", "max"), "prior": ("val_prior_loss", "min")}


@dataclass(frozen=True)
class SweepSpace:
    """A search space file: preset, metric, the parameters (config keys) and the early-stopping schedule."""

    preset: str
    params: dict[str, dict]
    stage: str = "decomposer"
    metric: str = "val_si_sdri"
    mode: str = "max"
    asha: dict = field(default_factory=lambda: {"max_t": 300, "grace_period": 100, "reduction_factor": 2})
    eval: dict = field(default_factory=lambda: {"every": 50, "chunks": 4, "steps": 5})
    overrides: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> "SweepSpace":
        if not Path(path).is_file():
            shipped = sorted(p.name for p in (Path(__file__).parent / "spaces").glob("*.yaml"))
            raise ValueError(f"no search space file {path}; shipped spaces in tune/spaces/: {shipped}")
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict) or "preset" not in raw or "params" not in raw:
            raise ValueError(f"{path}: a space file needs 'preset' and 'params' (see tune/spaces/demo.yaml)")
        unknown = set(raw) - {"preset", "params", "stage", "metric", "mode", "asha", "eval", "overrides"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        stage = raw.get("stage", "decomposer")
        if stage not in STAGE_METRICS:
            raise ValueError(f"{path}: stage must be one of {list(STAGE_METRICS)}, got {stage!r}")
        raw = {"metric": STAGE_METRICS[stage][0], "mode": STAGE_METRICS[stage][1], **raw}
        space = cls(**raw)
        if stage == "decomposer" and any(key.startswith("prior.") for key in space.params):
            raise ValueError(f"{path}: prior.* parameters do not change a decomposer; sweep them in a space with "
                             f"'stage: prior' (see tune/spaces/demo_prior.yaml)")
        for key, spec in space.params.items():
            parse_override(f"{key}=0")  # the key must be a config field
            if spec.get("type") not in SAMPLERS:
                raise ValueError(f"{path}: params.{key}.type must be one of {list(SAMPLERS)}")
        if space.mode not in ("max", "min"):
            raise ValueError(f"{path}: mode must be max or min")
        return space

    def tune_space(self) -> dict:
        """Ray Tune samplers; list-valued choices are YAML-encoded strings (Optuna wants scalars)."""
        from ray import tune

        space = {}
        for key, spec in self.params.items():
            kind = spec["type"]
            if kind == "choice":
                values = [yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, list) else v
                          for v in spec["values"]]
                space[key] = tune.choice(values)
            elif kind == "uniform":
                space[key] = tune.uniform(float(spec["low"]), float(spec["high"]))
            elif kind == "loguniform":
                space[key] = tune.loguniform(float(spec["low"]), float(spec["high"]))
            else:
                space[key] = tune.randint(int(spec["low"]), int(spec["high"]))
        return space


def decode_params(params: dict) -> dict:
    """Trial parameters back to config values (YAML-encoded lists become lists)."""
    return {key: yaml.safe_load(value) if isinstance(value, str) and value.startswith("[") else value
            for key, value in params.items()}


def trial_config(space: SweepSpace, params: dict, extra_overrides: list[str]):
    overrides = {**space.overrides, **dict(parse_override(o) for o in extra_overrides), **decode_params(params)}
    return load_config(space.preset, overrides)


def make_trial(space: SweepSpace, root: str, sweep_name: str, args: argparse.Namespace,
               decomposer: str | None = None):
    """The Tune function trainable: build the TorchTrainer for one trial (a decomposer, or a prior over the frozen
    ``decomposer``) and fit it."""
    paths = common.layout(root)
    cache = storage.join(paths["latents"], "train")
    val_cache = storage.join(paths["latents"], "validation")
    overrides = list(args.overrides)

    def trial(params: dict) -> None:
        from ray import tune
        from ray.tune.integration.ray_train import TuneReportCallback

        config = trial_config(space, params, overrides)
        trial_id = tune.get_context().get_trial_id()
        run_uri = storage.join(root, "sweeps", sweep_name, "trials", trial_id)
        trainer = train_job.make_torch_trainer(
            space.stage, config, cache, run_uri, storage.join(root, "sweeps", sweep_name, "ray"),
            name=f"{sweep_name}-{trial_id}", workers=args.workers_per_trial, gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker, max_failures=1, quiet=True, decomposer=decomposer,
            extra_loop_config={"eval_every": int(space.eval.get("every", 50)), "val_cache": val_cache,
                               "eval_chunks": int(space.eval.get("chunks", 4)),
                               "eval_steps": int(space.eval.get("steps", 5))},
            callbacks=[TuneReportCallback()])
        trainer.fit()

    return trial


def progress_callback(total: int, metric: str, mode: str, quiet: bool):
    """A Tune callback that shows the sweep's progress per trial: a bar (stderr), or with ``quiet`` one line per
    finished trial (for log files), each with the trial's last score and the best so far."""
    from ray import tune
    from tqdm import tqdm

    class SweepProgress(tune.Callback):
        def __init__(self) -> None:
            self.done = 0
            self.best: float | None = None
            self.bar = None  # made at the first finished trial: Tune pickles its callbacks before the sweep starts

        def _finished(self, trial, state: str) -> None:
            self.done += 1
            score = (trial.last_result or {}).get(metric)
            if isinstance(score, (int, float)) and (self.best is None or (score > self.best if mode == "max"
                                                                          else score < self.best)):
                self.best = float(score)
            shown = f"{score:.4g}" if isinstance(score, (int, float)) else "none"
            best = f"{self.best:.4g}" if self.best is not None else "none"
            if not quiet:
                if self.bar is None:
                    self.bar = tqdm(total=total, desc="[sweep] trials", unit="trial", dynamic_ncols=True)
                self.bar.update(1)
                self.bar.set_postfix_str(f"last {shown}, best {metric} {best}")
                if self.done >= total:
                    self.bar.close()
            else:
                print(f"[sweep] trial {self.done}/{total} {state}: {trial.trial_id} {metric} {shown}; best {best}",
                      flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._finished(trial, "finished")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._finished(trial, "failed")

    return SweepProgress()


def run(args: argparse.Namespace) -> dict:
    import mlflow
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = SweepSpace.load(args.space)
    if args.preset not in (None, space.preset):
        raise ValueError(f"--preset {args.preset} but the space file {args.space} sets preset: {space.preset}; "
                         f"the space file decides (edit it, or use --set to override fields)")
    base = load_config(space.preset, list(args.overrides))
    args.preset = space.preset
    root = common.experiment_root(args, base)
    sweep_name = args.name or f"sweep-{Path(args.space).stem}"
    args.run_name = common.checked_run_name(args.run_name or sweep_name)
    experiment = args.experiment or f"ucr-{base.name}"
    args.experiment = experiment
    decomposer = None
    if space.stage == "prior":
        decomposer = storage.absolute(args.decomposer or storage.join(common.layout(root)["decomposer"], "final.pt"))
        if not storage.exists(decomposer):
            raise ValueError(f"a prior sweep needs a trained decomposer: {decomposer} does not exist; train one "
                             f"(python -m jobs.train --preset {space.preset} --out {root}) or pass --decomposer URI")
    common.init_ray(args.address)  # the dashboard's State API lets Ray Train free stopped trials' CPUs
    # data and latents (resumable: already-done work is skipped)
    data.run(args)
    args.supervised = False
    encode.run(args)
    parent = common.parent_run_id(args, base)
    storage_path, storage_filesystem = train_job.ray_storage(storage.join(root, "sweeps", sweep_name, "tune"))
    trainable = tune.with_resources(make_trial(space, root, sweep_name, args, decomposer),
                                    {"CPU": 0, "memory": args.trial_memory_mb * 1024 * 1024})
    mlflow_callback = MLflowLoggerCallback(tracking_uri=common.tracking_uri(), experiment_name=experiment,
                                           tags={"mlflow.parentRunId": parent, "ucr.sweep": sweep_name,
                                                 "ucr.run_name": args.run_name}, save_artifact=False)
    run_config = tune.RunConfig(name=sweep_name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                                callbacks=[mlflow_callback, progress_callback(args.trials, space.metric, space.mode,
                                                                              args.quiet)])
    searcher = OptunaSearch(metric=space.metric, mode=space.mode, seed=args.seed)
    scheduler = ASHAScheduler(time_attr="step", metric=space.metric, mode=space.mode,
                              max_t=int(space.asha["max_t"]), grace_period=int(space.asha["grace_period"]),
                              reduction_factor=float(space.asha["reduction_factor"]))
    restore_path = os.path.join(storage_path, sweep_name) if not storage_filesystem else f"{storage_path}/{sweep_name}"
    if tune.Tuner.can_restore(restore_path, storage_filesystem=storage_filesystem):
        print(f"[sweep] resuming {sweep_name} from {restore_path}", flush=True)
        tuner = tune.Tuner.restore(restore_path, trainable=trainable, param_space=space.tune_space(),
                                   resume_errored=True, storage_filesystem=storage_filesystem)
    else:
        tuner = tune.Tuner(trainable, param_space=space.tune_space(), run_config=run_config,
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                                       num_samples=args.trials,
                                                       max_concurrent_trials=args.concurrency))
    results = tuner.fit()
    table = results.get_dataframe()
    # each trial's last score: it goes with the newest checkpoint, which is what gets registered
    best = results.get_best_result(metric=space.metric, mode=space.mode, scope="last")
    stopped_early = int((table["step"] < int(space.asha["max_t"])).sum()) if "step" in table else 0
    summary = {"trials": len(table), "stopped_early": stopped_early, "best_trial": best.metrics.get("trial_id"),
               "best_params": decode_params(best.config), "best_metric": best.metrics.get(space.metric)}
    client = mlflow.MlflowClient(common.tracking_uri())
    with tempfile.TemporaryDirectory() as folder:
        write_summary(table, space, folder, searcher)
        for name in os.listdir(folder):
            client.log_artifact(parent, os.path.join(folder, name), artifact_path=f"sweep_{sweep_name}")
        where = f"MLflow run {parent}, artifacts sweep_{sweep_name}/"
        if args.results_dir:
            os.makedirs(args.results_dir, exist_ok=True)
            for name in os.listdir(folder):
                shutil.copy(os.path.join(folder, name), os.path.join(args.results_dir, name))
            where += f" and {args.results_dir}"
    print(f"[sweep] {summary['trials']} trials, {stopped_early} stopped early by ASHA; best "
          f"{space.metric} = {summary['best_metric']}; summary and plots: {where}")
    if args.register_best:
        summary["registered"] = register_best(args, sweep_name, best, space, root)
    common.print_result("sweep", {k: v for k, v in summary.items() if k != "best_params"})
    return summary


def register_best(args, sweep_name: str, best, space: SweepSpace, root: str) -> dict:
    """Register the best trial's model and evaluate it on the validation and test splits (alias rules apply)."""
    from ucr import checkpoint as ckpt

    trial_id = best.metrics.get("trial_id")
    trial_run = storage.join(root, "sweeps", sweep_name, "trials", str(trial_id))
    try:  # final.pt, or the newest checkpoint of a trial that ASHA stopped (or stopped at max_t before final.pt)
        model = ckpt.resolve(trial_run)
    except ValueError as err:
        return {"registered": False, "reason": f"best trial {trial_id}: {err}"}
    print(f"[sweep] registering the best trial {trial_id} from {model}", flush=True)
    best_args = argparse.Namespace(**{**vars(args), "run_name": f"{sweep_name}-best", "model": model,
                                      "preset": space.preset, "parent_run_id": None})
    best_args.overrides = list(args.overrides) + [f"{k}={v}" for k, v in decode_params(best.config).items()]
    registered = register.run(best_args)
    evaluated = evaluate.run(best_args)
    return {"version": registered["version"], "val_si_sdri": evaluated["val_si_sdri"],
            "test_si_sdri": evaluated["test"]["si_sdri"], "promoted": evaluated["promotion"]["promoted"]}


def write_summary(table, space: SweepSpace, folder: str, searcher) -> str:
    """``summary.md`` (one row per trial) and Optuna's plots as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c.startswith("config/")] + [space.metric, "step", "loss"]
    columns = [c for c in columns if c in table.columns]
    ordered = table.sort_values(space.metric, ascending=space.mode == "min") if space.metric in table else table
    lines = ["| trial | " + " | ".join(c.replace("config/", "") for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for _, row in ordered.iterrows():
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append(f"| {row.get('trial_id', '')} | " + " | ".join(cells) + " |")
    path = os.path.join(folder, "summary.md")
    with open(path, "w") as handle:
        handle.write(f"# Sweep summary\n\nMetric: {space.metric} ({space.mode}); ASHA on `step` "
                     f"(max_t {space.asha['max_t']}, grace {space.asha['grace_period']}).\n\n" + "\n".join(lines)
                     + "\n")
    study = getattr(searcher, "_ot_study", None)
    if study is not None and len(study.trials) > 1:
        from optuna.visualization import matplotlib as optuna_plots

        for name, plot in (("optimization_history", optuna_plots.plot_optimization_history),
                           ("param_importances", optuna_plots.plot_param_importances),
                           ("parallel_coordinate", optuna_plots.plot_parallel_coordinate)):
            try:
                axis = plot(study)
                figure = axis.figure if hasattr(axis, "figure") else axis[0].figure
                figure.set_size_inches(8, 5)
                figure.tight_layout()
                figure.savefig(os.path.join(folder, f"{name}.png"), dpi=90)
                plt.close(figure)
            except (ValueError, RuntimeError) as err:  # e.g. importances need 2+ completed trials with variation
                with open(os.path.join(folder, f"{name}.txt"), "w") as handle:
                    handle.write(f"not drawn: {err}\n")
    return path


def parser() -> argparse.ArgumentParser:
    parser = common.base_parser(__doc__, preset_default=None,  # the space file names the preset
                                preset_help="must match the space file's preset when given (the space file decides)")
    parser.add_argument("--space", required=True, help="search space YAML (tune/spaces/*.yaml)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=1, help="trials running at once")
    parser.add_argument("--name", help="sweep name (default: sweep-<space file>); the same name resumes")
    parser.add_argument("--seed", type=int, default=0, help="Optuna TPE seed")
    parser.add_argument("--workers-per-trial", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="fractional GPUs are fine, e.g. 0.5")
    parser.add_argument("--trial-memory-mb", type=int, default=256, help="memory reserved by each trial driver")
    parser.add_argument("--decomposer", help="for a 'stage: prior' space: the frozen decomposer checkpoint "
                                             "(default: <out>/decomposer/final.pt)")
    parser.add_argument("--register-best", action="store_true", help="register and evaluate the best trial")
    parser.add_argument("--results-dir", help="also copy the summary and plots here (e.g. docs/results/sweep)")
    common.add_evaluation_args(parser)  # for the best trial's evaluation (--register-best)
    return parser


def main() -> None:
    try:
        run(parser().parse_args())
    except ValueError as err:  # bad space files, overrides and settings: the message says what to change
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
