"""Stage 1 — prepare data: render a synthetic Slakh-layout dataset with parallel Ray tasks (one per track), or
check that a real dataset is where the config says.

    python -m jobs.data --preset demo --out runs/demo [--address ...]
"""

from __future__ import annotations

import time

from jobs import common
from ucr import storage


def data_root(config, root: str) -> str:
    """Rendered data lives in the experiment folder; real data where ``data.root`` says."""
    return common.layout(root)["data"] if config.data.synthetic else config.data.root


def render_parallel(config, out: str, progress: bool = True) -> dict:
    """Render ``data.synthetic_tracks`` tracks as Ray tasks; tracks already complete are skipped (resumable)."""
    import ray
    from tqdm import tqdm

    from ucr.data import synth

    plans = synth.plan_tracks(config.data.synthetic_tracks, config.data.synthetic_seed)
    todo = [plan for plan in plans
            if not storage.exists(storage.join(synth.track_uri(out, plan), "metadata.yaml"))]

    @ray.remote(num_cpus=1)
    def render_one(plan) -> float:
        rendered = synth.render_track(config.data.synthetic, plan, config.data.synthetic_seconds,
                                      sample_rate=config.data.sample_rate)
        synth.write_track(out, plan, rendered)
        return config.data.synthetic_seconds

    started = time.monotonic()
    pending = [render_one.remote(plan) for plan in todo]
    rendered_seconds = 0.0
    with tqdm(total=len(plans), initial=len(plans) - len(todo), desc="render", unit="track",
              disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rendered_seconds += ray.get(done[0])
            bar.update(1)
    wall = time.monotonic() - started
    return {"tracks": len(plans), "rendered": len(todo), "audio_seconds": rendered_seconds,
            "wall_seconds": wall, "audio_seconds_per_second": rendered_seconds / wall if wall else 0.0}


def run(args) -> dict:
    config = common.config_from(args)
    root = common.experiment_root(args, config)
    target = data_root(config, root)
    with common.stage_run(args, config, "data"):
        import mlflow

        if config.data.synthetic:
            common.init_ray(args.address)
            result = render_parallel(config, target, progress=not args.quiet)
        else:
            from ucr.data.readers import list_tracks

            result = {"splits": {split: len(list_tracks(target, split, config.data.layout))
                                 for split in ("train", "validation", "test")}}
        result["data_root"] = target
        mlflow.log_metrics({k: float(v) for k, v in result.items() if isinstance(v, (int, float))})
        common.print_result("data", result)
        return result


def parser():
    return common.base_parser(__doc__)


def main() -> None:
    common.run_main(lambda: run(parser().parse_args()))


if __name__ == "__main__":
    main()
