"""The whole experiment for a preset, stage after stage, under one MLflow parent run:
data -> encode -> train (-> supervised reference) -> prior -> register -> evaluate.

    python -m jobs.pipeline --preset demo --out runs/demo                      # embedded local Ray
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.pipeline --preset demo --out /shared/runs/demo           # on a cluster

Each stage is resumable: rerunning (or resubmitting with the same --run-name) skips rendered tracks and encoded
shards and resumes training from the latest checkpoint.
"""

from __future__ import annotations

import time

from jobs import common, data, encode, evaluate, register, train


def parser():
    parser = common.base_parser(__doc__)
    train.add_scaling_args(parser)
    parser.add_argument("--supervised", action="store_true", help="also train the supervised reference")
    parser.add_argument("--skip-prior", action="store_true", help="do not train the prior")
    parser.add_argument("--model-name", default="ucr", help="registered model name (default: ucr)")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--steps", type=int, help="evaluation sampler steps (default: diffusion.sampler_steps)")
    parser.add_argument("--max-chunks", type=int, help="evaluate at most N chunks per split")
    parser.add_argument("--steps-curve", type=int, nargs="*", default=[])
    parser.add_argument("--generate-n", type=int, default=8, help="excerpts generated for the generation metrics")
    return parser


def run(args) -> dict:
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
    for name, stage in stages:
        started = time.monotonic()
        print(f"\n=== stage {name} ===", flush=True)
        results[name] = stage()
        timings[name] = time.monotonic() - started
    import mlflow

    client = mlflow.MlflowClient(common.tracking_uri())
    for name, seconds in timings.items():
        client.log_metric(args.parent_run_id, f"wall_seconds_{name}", seconds)
    client.set_terminated(args.parent_run_id)
    print("\n=== done ===")
    for name, seconds in timings.items():
        print(f"  {name:18s} {seconds:7.1f} s")
    print(f"  outputs:   {root}")
    print(f"  reports:   {common.layout(root)['reports']}/test/report.md")
    print(f"  MLflow:    {common.tracking_uri()}  (parent run {args.parent_run_id})")
    print(f"             open the UI: mlflow ui --backend-store-uri {common.tracking_uri()} --port 5000")
    return {"results": results, "timings": timings, "parent_run_id": args.parent_run_id}


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
