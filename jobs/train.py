"""Stage 3 — train the decomposer with Ray Train (``TorchTrainer``, DDP: gloo on CPUs, NCCL on GPUs).

Every worker runs the same framework-agnostic loop as ``ucr train`` (``ucr.train``); this module only injects
Ray's metric reports and MLflow step logging. Checkpoints are written once, by the loop, to the run folder (local
or s3://; every ``train.checkpoint_every`` steps and at the end; the newest ``train.keep_checkpoints`` kept). Ray is
handed a pointer to each (``checkpoint.json``: its URI and step), not a second copy of the weights. A failed worker
group is restarted (``FailureConfig``) and, like a job resubmitted with the same run name, resumes from the run
folder's newest checkpoint (``Trainer.resume_if_possible``: the one resume path).

    python -m jobs.train --preset demo --out runs/demo [--workers 2] [--gpus-per-worker 1] [--address ...]
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from jobs import common
from ucr import storage

# what Ray's checkpoint of a step holds: {"checkpoint": URI of the run folder's step checkpoint, "step": N}
POINTER_FILE = "checkpoint.json"


# ----------------------------------------------------------------------------------------------------------------------
# inside each Ray Train worker


# training metrics renamed in MLflow so the UI groups them and says their protocol (Ray's reports keep the loop's
# names: Tune's schedulers and searchers use them)
VALIDATION_NAMES = {"val_si_sdri": "val/si_sdri/mean/whole_fixed_quick",
                    "val_prior_loss": "val/prior_loss/masked_denoising"}


def mlflow_metric_name(name: str) -> str:
    """``val_si_sdri_Drums`` -> ``val/si_sdri/Drums/whole_fixed_quick`` (the quick score: whole chunks of a fixed
    validation subset, one matching for the subset); other names unchanged."""
    if name in VALIDATION_NAMES:
        return VALIDATION_NAMES[name]
    if name.startswith("val_si_sdri_"):
        return f"val/si_sdri/{name[len('val_si_sdri_'):]}/whole_fixed_quick"
    return name


class StepLogger:
    """Rank-0 MLflow metric logging (buffered; one request per log interval). The learning rate is logged only
    when it changes (warm-up): a constant one is the ``train.lr`` param, not a flat line."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, prefix: str) -> None:
        self.run_id = run_id
        self.prefix = prefix
        self.client = None
        self.last_lr: float | None = None
        if run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def filtered(self, metrics: dict) -> dict:
        """``metrics`` under their MLflow names, without an unchanged learning rate."""
        out = {}
        for name, value in metrics.items():
            if name == "lr":
                if self.last_lr is not None and float(value) == self.last_lr:
                    continue
                self.last_lr = float(value)
            out[f"{self.prefix}{mlflow_metric_name(name)}"] = float(value)
        return out

    def log(self, step: int, metrics: dict) -> None:
        if self.client is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = self.filtered(metrics)
        if metrics:
            self.client.log_batch(self.run_id, metrics=[Metric(name, value, now, step)
                                                        for name, value in metrics.items()])


def train_loop_per_worker(loop_config: dict) -> None:
    """The function every Ray Train worker runs. ``loop_config``: kind ("decomposer", "supervised", "prior"),
    config (nested dict), cache, run_uri, decomposer (for the prior), tracking_uri, mlflow_run_id, and optionally
    validation settings (val_cache, eval_every, eval_chunks, eval_steps) for a quick separation score."""
    import ray.train
    import ray.train.torch

    from ucr.config import ExperimentConfig
    from ucr.train.loop import Hooks
    from ucr.train.tasks import build_decomposer_trainer, build_prior_trainer

    config = ExperimentConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    def wrap(model):
        if world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    logger = StepLogger(loop_config.get("tracking_uri"), loop_config.get("mlflow_run_id") if rank == 0 else None,
                        prefix="")
    last: dict[str, Any] = {}

    def on_log(step: int, metrics: dict) -> None:
        last.update(metrics)
        logger.log(step, metrics)
        if not trainer.checkpoints_at(step):  # else the checkpoint's report, just after, carries these metrics
            ray.train.report({**last, "step": step})  # carries the latest validation score too

    def on_checkpoint(step: int, uri: str) -> None:
        # the run folder (local or s3://) is the one store of checkpoints; Ray is handed a pointer to it (Ray Train
        # keeps only metrics that come with a checkpoint), never a second copy of the weights
        metrics = {**last, "step": step}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=f"step-{step:08d}")
            return
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, POINTER_FILE), "w") as handle:
                json.dump({"checkpoint": uri, "step": step}, handle)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"step-{step:08d}")

    hooks = Hooks(on_log=on_log, on_checkpoint=on_checkpoint)
    validator = _validator(loop_config, config)
    if validator is not None:
        def on_eval(step: int, model) -> dict:
            scores = validator(model) if rank == 0 else {}
            last.update(scores)
            logger.log(step, scores)
            if not (trainer.logs_at(step) or trainer.checkpoints_at(step)):  # else their reports carry it
                ray.train.report({**last, "step": step})
            return scores

        hooks.on_eval, hooks.eval_every = on_eval, int(loop_config["eval_every"])

    kind = loop_config["kind"]
    common_args = dict(device=device, rank=rank, world_size=world, hooks=hooks, progress=rank == 0 and
                       not loop_config.get("quiet"), wrap=wrap)
    if kind == "codec":  # loop_config["cache"] is the audio dataset here
        from ucr.codec.train import build_codec_trainer

        trainer = build_codec_trainer(config, loop_config["cache"], loop_config["run_uri"], **common_args)
    elif kind == "prior":
        trainer = build_prior_trainer(config, loop_config["decomposer"], loop_config["cache"],
                                      loop_config["run_uri"], **common_args)
    else:
        trainer = build_decomposer_trainer(config, loop_config["cache"], loop_config["run_uri"],
                                           supervised=kind == "supervised", **common_args)
    logger.last_lr = trainer.lr_at(trainer.step)  # constant without warm-up: then never drawn, it is train.lr
    # one resume path: the run folder's newest step checkpoint (a restarted worker group and a resubmitted job
    # both land here; every rank reads the same file)
    trainer.resume_if_possible()
    if rank == 0 and trainer.step:
        print(f"[train] {kind}: resumed at step {trainer.step}", flush=True)
    if validator is not None and rank == 0:  # every report then carries the validation metric (Tune needs it)
        last.update(validator(trainer.eval_model()))
    trainer.fit(resume=False)  # every step seeds itself from (train.seed, step, rank)


def _validator(loop_config: dict, config):
    """Tune's early-stopping metric on a fixed validation subset, or None: a quick separation score for a decomposer
    (``val_si_sdri``), the held-out masked denoising loss for a prior (``val_prior_loss``)."""
    if not loop_config.get("eval_every"):
        return None
    if loop_config["kind"] == "prior":
        from ucr.train.tasks import prior_validator

        return prior_validator(loop_config["decomposer"], loop_config["val_cache"],
                               n_chunks=int(loop_config["eval_chunks"]), crop_frames=config.data.crop_frames)
    from ucr.codec import build_codec
    from ucr.evaluate import quick_separation_score

    codec = build_codec(config.codec)  # once: EnCodec weights are not reloaded at every validation

    def validate(model) -> dict:
        return quick_separation_score(model, config, loop_config["val_cache"], n_chunks=int(loop_config["eval_chunks"]),
                                      steps=int(loop_config["eval_steps"]), codec=codec)

    return validate


# ----------------------------------------------------------------------------------------------------------------------
# the driver side: one builder for jobs and tune


def ray_storage(uri: str):
    """``(storage_path, storage_filesystem)`` for RunConfig: a local folder, or S3 through s3fs (custom endpoints
    included) wrapped as a pyarrow filesystem."""
    if not storage.is_remote(uri):
        os.makedirs(uri, exist_ok=True)
        return uri, None
    import pyarrow.fs

    fs, path = storage.filesystem(uri)
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def make_torch_trainer(kind: str, config, cache: str, run_uri: str, ray_root: str, name: str, workers: int = 1,
                       gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_failures: int = 2,
                       decomposer: str | None = None, mlflow_run_id: str | None = None,
                       extra_loop_config: dict | None = None, callbacks: list | None = None, quiet: bool = False,
                       placement_strategy: str = "PACK"):
    """The ``TorchTrainer`` for a decomposer / supervised / prior run (the one builder jobs and tune share).

    ``placement_strategy``: ``PACK`` (workers on as few nodes as possible: fastest all-reduce) or ``SPREAD`` (one
    per node where possible, so losing a node costs fewer workers; soft: a restart packs onto what is left)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cache, run_uri, ray_root = storage.absolute(cache), storage.absolute(run_uri), storage.absolute(ray_root)
    decomposer = decomposer and storage.absolute(decomposer)  # workers run in another working directory
    storage_path, storage_filesystem = ray_storage(ray_root)
    loop_config = {"kind": kind, "config": config.to_dict(), "cache": cache, "run_uri": run_uri,
                   "decomposer": decomposer, "tracking_uri": common.tracking_uri(), "mlflow_run_id": mlflow_run_id,
                   "quiet": quiet, **(extra_loop_config or {})}
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources,
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=config.train.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=max_failures),
                             callbacks=callbacks or [], worker_runtime_env={"env_vars": common.worker_env()}),
    )


def add_scaling_args(parser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP ranks)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs per worker (NCCL when > 0; fractions share a GPU); default 0: CPU and gloo")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--max-failures", type=int, default=2,
                        help="worker-group restarts before giving up (a lost worker or node restarts the group from "
                             "the latest checkpoint)")
    parser.add_argument("--placement-strategy", choices=["PACK", "SPREAD"], default="PACK",
                        help="PACK: workers on as few nodes as possible (default); SPREAD: across nodes, so a lost "
                             "node costs fewer workers")


def add_validation_args(parser) -> None:
    parser.add_argument("--eval-every", type=int, default=None,
                        help="score the model on a fixed validation subset every N steps and log the curve "
                             "(the quick separation score; the held-out masked loss for a prior); default: "
                             "train.checkpoint_every when the experiment has a validation cache; 0: never")
    parser.add_argument("--eval-chunks", type=int, default=4, help="validation chunks scored each time (default 4)")


def validation_settings(args, config, latents: str, kind: str) -> dict:
    """The loop's validation settings (see :func:`_validator`) when a validation cache with stems exists and
    ``--eval-every`` is not 0; else no validation (an empty dict)."""
    every = getattr(args, "eval_every", None)
    every = config.train.checkpoint_every if every is None else every
    val_cache = storage.join(latents, "validation")
    if not every or kind in ("supervised", "codec") or not storage.exists(storage.join(val_cache, "manifest.json")):
        return {}
    return {"eval_every": int(every), "val_cache": val_cache, "eval_chunks": int(getattr(args, "eval_chunks", 4)),
            "eval_steps": min(5, config.diffusion.sampler_steps)}


def log_outcome(run_uri: str, stage: str) -> dict:
    """Log the final checkpoint's config, the loss curve and the validation curve (from the run's MLflow history)
    and the checkpoint."""
    import mlflow

    from ucr import checkpoint as ckpt

    final = storage.join(run_uri, "final.pt")
    payload = ckpt.load(final)
    common.log_json("config.json", payload["config"])
    client = mlflow.MlflowClient(common.tracking_uri())
    run_id = mlflow.active_run().info.run_id
    curves = [("loss", f"{stage}_loss.png", "loss", True)]
    curves += [(name, f"{stage}_validation.png", name, False) for name in VALIDATION_NAMES.values()]
    for metric, file_name, label, log_scale in curves:
        history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        if not history:
            continue
        png = loss_curve_png([m.step for m in history], [m.value for m in history], stage, label, log_scale)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, file_name)
            with open(path, "wb") as handle:
                handle.write(png)
            mlflow.log_artifact(path)
    common.log_uri_artifact(final, artifact_path="checkpoint")
    return {"final": final, "step": payload["step"]}


def loss_curve_png(steps: list[int], values: list[float], title: str, label: str = "loss",
                   log_scale: bool = True) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, values, marker="" if log_scale else "o")
    axis.set_xlabel("step")
    axis.set_ylabel(label)
    if log_scale:
        axis.set_yscale("log")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def latents_root(args, paths: dict) -> str:
    """The latent cache root a decomposer / supervised / prior run reads: ``--latents`` (a folder or s3:// URI
    holding ``train/`` and, for the quick validation score, ``validation/``, as ``ucr data encode`` or
    ``jobs.encode`` write them), else the experiment's own ``OUT/latents``."""
    latents = getattr(args, "latents", None)
    return storage.absolute(latents) if latents else paths["latents"]


def training_input(args, paths: dict, kind: str) -> str:
    """What the run trains on: the audio dataset for a codec (``--data``, else the experiment's rendered data),
    else the latent cache's train split — refused here, before a run is opened or Ray started, when it is not there
    (a sentence that says how to make it or where to point)."""
    if kind == "codec":
        return storage.absolute(getattr(args, "data", None) or paths["data"])
    from ucr.data.latents import resolve_cache

    root = latents_root(args, paths)
    try:
        return resolve_cache(root, "train")
    except ValueError as err:
        raise ValueError(f"{err}; or run `python -m jobs.encode` for this experiment first, or pass --latents "
                         f"with the root of an existing cache (the folder holding train/)") from None


def run(args, kind: str = "decomposer") -> dict:
    config = common.config_from(args)
    root = common.experiment_root(args, config)
    paths = common.layout(root)
    stage = {"decomposer": "train", "supervised": "train-supervised", "prior": "prior", "codec": "codec"}[kind]
    cache = training_input(args, paths, kind)
    with common.stage_run(args, config, stage) as child:
        common.init_ray(args.address)
        run_uri = paths["supervised" if kind == "supervised" else kind]
        decomposer = storage.join(paths["decomposer"], "final.pt") if kind == "prior" else None
        trainer = make_torch_trainer(kind, config, cache, run_uri, paths["ray"],
                                     name=f"{common.run_name(args, config)}-{kind}", workers=args.workers,
                                     gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                                     max_failures=args.max_failures, decomposer=decomposer,
                                     mlflow_run_id=child.info.run_id, quiet=args.quiet,
                                     placement_strategy=args.placement_strategy,
                                     extra_loop_config=validation_settings(args, config, latents_root(args, paths), kind))
        result = trainer.fit()
        if result.error:
            raise result.error
        if kind == "codec":
            from ucr.codec.train import RUN_EXPORT_FOLDER, export_pretrained

            export_pretrained(storage.join(run_uri, "final.pt"), storage.join(run_uri, RUN_EXPORT_FOLDER))
        outcome = log_outcome(run_uri, stage)
        common.print_result(stage, outcome)
        return outcome


def parser():
    parser = common.base_parser(__doc__)
    add_scaling_args(parser)
    add_validation_args(parser)
    parser.add_argument("--latents", default=None, metavar="URI",
                        help="latent cache root (folder or s3://) holding train/ and, for the validation score, "
                             "validation/, as `ucr data encode` or jobs.encode write them; default: OUT/latents")
    parser.add_argument("--supervised", action="store_true",
                        help="train the supervised reference instead (needs a train cache with stems: "
                             "`ucr data encode --with-stems` or `jobs.encode --with-stems`)")
    return parser


def main() -> None:
    args = parser().parse_args()
    common.run_main(lambda: run(args, kind="supervised" if args.supervised else "decomposer"))


if __name__ == "__main__":
    main()
