"""Training throughput: the plain in-process loop vs Ray Train with 1 and 2 workers (DDP on gloo), same preset,
same global batch. Prints steps/s (median of the logged windows after the first) and the ratios.

Run: .venv/bin/python tests/benchmarks/bench_train.py --cache runs/demo/latents/train [--steps 120]
(the cache comes from `make demo` or `python -m jobs.encode --preset demo --out runs/demo`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def plain(config, cache: str, folder: str) -> float:
    from ucr.train.loop import Hooks
    from ucr.train.tasks import build_decomposer_trainer

    rates = []
    hooks = Hooks(on_log=lambda step, metrics: rates.append(metrics["steps_per_sec"]))
    build_decomposer_trainer(config, cache, os.path.join(folder, "plain"), hooks=hooks, progress=False).fit()
    return statistics.median(rates[1:] or rates)


def with_ray(config, cache: str, folder: str, workers: int) -> float:
    import mlflow

    from jobs import common, train

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = mlflow.MlflowClient().create_run(common.mlflow_experiment("bench")).info.run_id
    trainer = train.make_torch_trainer("decomposer", config, cache, os.path.join(folder, f"ray{workers}"),
                                       os.path.join(folder, "ray"), name=f"bench-{workers}-{time.time_ns()}",
                                       workers=workers, mlflow_run_id=run_id, quiet=True)
    trainer.fit()
    history = mlflow.MlflowClient().get_metric_history(run_id, "steps_per_sec")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    import ray

    from ucr.config import load_config

    config = load_config(args.preset, {"train.steps": args.steps, "train.log_every": 20,
                                       "train.checkpoint_every": args.steps})
    with tempfile.TemporaryDirectory() as folder:
        results = {"plain loop": plain(config, args.cache, folder)}
        ray.init(num_cpus=2, include_dashboard=False)
        for workers in (1, 2):
            results[f"Ray Train, {workers} worker(s)"] = with_ray(config, args.cache, folder, workers)
        ray.shutdown()
    base = results["plain loop"]
    print(f"# {args.preset} preset, global batch {config.train.batch_size}, {args.steps} steps, "
          f"median steps/s over log windows")
    print("| run | steps/s | vs plain |\n|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.2f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
