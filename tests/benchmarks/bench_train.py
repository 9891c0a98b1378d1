"""Training throughput: the plain in-process loop (all threads, and 1 thread like a 1-CPU Ray worker) vs Ray Train
with 1 and 2 workers (DDP on gloo), same preset, same global batch. Prints steps/s (median of the logged windows
after the first, median over repeats) and the ratios to the 1-thread plain loop.

Run: .venv/bin/python tests/benchmarks/bench_train.py --cache demo_out/latents/train [--steps 120]
(the cache comes from `make demo`, or `python -m jobs.encode --preset demo --out demo_out`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def plain(config, cache: str, folder: str, threads: int) -> float:
    import torch

    from ucr.train.loop import Hooks
    from ucr.train.tasks import build_decomposer_trainer

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rates = []
    hooks = Hooks(on_log=lambda step, metrics: rates.append(metrics["steps_per_sec"]))
    build_decomposer_trainer(config, cache, os.path.join(folder, f"plain{time.time_ns()}"), hooks=hooks,
                             progress=False).fit()
    torch.set_num_threads(previous)
    return statistics.median(rates[1:] or rates)


def with_ray(config, cache: str, folder: str, workers: int) -> float:
    import mlflow

    from jobs import common, train

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = mlflow.MlflowClient().create_run(common.mlflow_experiment("bench")).info.run_id
    trainer = train.make_torch_trainer("decomposer", config, cache, os.path.join(folder, f"ray{time.time_ns()}"),
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
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting (the median is reported)")
    args = parser.parse_args()
    import ray
    import torch

    from ucr.config import load_config

    config = load_config(args.preset, {"train.steps": args.steps, "train.log_every": 20,
                                       "train.checkpoint_every": args.steps})
    threads = torch.get_num_threads()
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):  # interleaved, so that load drifts on a shared machine hit every setting
            runs.setdefault(f"plain loop, {threads} threads", []).append(plain(config, args.cache, folder, threads))
            runs.setdefault("plain loop, 1 thread", []).append(plain(config, args.cache, folder, 1))
        from jobs import common

        common.init_ray(num_cpus=2)
        for _ in range(args.repeats):
            for workers in (1, 2):  # Ray gives each 1-CPU worker one thread (OMP_NUM_THREADS=1)
                runs.setdefault(f"Ray Train, {workers} worker(s) x 1 CPU", []).append(
                    with_ray(config, args.cache, folder, workers))
        ray.shutdown()
    results = {name: statistics.median(rates) for name, rates in runs.items()}
    base = results["plain loop, 1 thread"]
    print(f"# {args.preset} preset, global batch {config.train.batch_size}, {args.steps} steps, "
          f"median steps/s over log windows, median of {args.repeats} runs")
    print("| run | steps/s (runs) | vs plain loop, 1 thread |\n|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.2f} ({', '.join(f'{r:.2f}' for r in runs[name])}) | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
