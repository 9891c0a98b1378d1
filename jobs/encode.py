"""Stage 2 — encode the splits into latent caches, shards in parallel Ray tasks; resumable (shards already in the
manifest are kept) and refusing a cache made with other settings.

    python -m jobs.encode --preset demo --out runs/demo [--address ...] [--supervised]
"""

from __future__ import annotations

import time

from jobs import common
from jobs.data import data_root
from ucr import storage

SPLITS = ("train", "validation", "test")


def encode_parallel(config, settings, out: str, progress: bool = True) -> dict:
    """Encode one split: the driver plans and records, Ray tasks encode and write shards."""
    import ray
    from tqdm import tqdm

    from ucr.codec import build_codec
    from ucr.data import latents

    codec = build_codec(config.codec)
    plan = latents.plan_encode(settings, codec.fingerprint, codec.describe(), out)
    if plan.damaged:
        print(f"[encode] {settings.split}: {plan.repair_note()}", flush=True)
    pending = plan.pending()

    @ray.remote(num_cpus=1)
    def encode_one(index: int, tracks: list[str]):
        return (index, *latents.write_shard(settings, build_codec(config.codec), out, index, tracks))

    refs = [encode_one.remote(index, plan.shards[index]) for index in pending]
    with tqdm(total=len(plan.shards), initial=len(plan.shards) - len(pending), desc=f"encode {settings.split}",
              unit="shard", disable=not progress) as bar:
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            index, name, entry, report = ray.get(done[0])
            latents.record_shard(plan, index, name, entry, report)
            bar.update(1)
    manifest = latents.finalize_encode(plan)
    return {"chunks": manifest["num_chunks"], "shards": len(plan.shards), "new_shards": len(pending),
            "skipped_tracks": manifest["skipped"]["skipped_tracks"]}


def run(args) -> dict:
    from ucr.data.latents import EncodeSettings

    config = common.config_from(args)
    root = common.experiment_root(args, config)
    source = data_root(config, root)
    with common.stage_run(args, config, "encode"):
        import mlflow

        common.init_ray(args.address)
        result = {}
        for split in SPLITS:
            started = time.monotonic()
            with_stems = split != "train" or getattr(args, "supervised", False)
            settings = EncodeSettings.from_config(config, source, split, with_stems)  # data.tracks_per_shard
            out = storage.join(common.layout(root)["latents"], split)
            summary = encode_parallel(config, settings, out, progress=not args.quiet)
            summary["wall_seconds"] = time.monotonic() - started
            result[split] = summary
            mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in summary.items()})
        common.print_result("encode", result)
        return result


def parser():
    parser = common.base_parser(__doc__)
    parser.add_argument("--supervised", "--with-stems", dest="supervised", action="store_true",
                        help="also store stem latents for the train split (the supervised reference needs them; "
                             "`ucr data encode` calls it --with-stems)")
    return parser


def main() -> None:
    common.run_main(lambda: run(parser().parse_args()))


if __name__ == "__main__":
    main()
