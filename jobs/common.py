"""What every job shares: arguments, connecting to Ray, MLflow runs (a parent per experiment, a child per stage),
and the environment workers need (AWS and MLflow variables).

A stage is a function ``run(args) -> dict`` plus a ``main()`` for ``python -m jobs.<stage>``; ``jobs.pipeline`` calls
the stages' ``run`` in order inside one parent MLflow run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from ucr import models, storage
from ucr.config import ExperimentConfig, load_config

# variables a worker on another node needs to reach storage, tracking and model weights
FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "HF_HOME", "HF_HUB_OFFLINE", "UCR_MODEL")
# run names go into MLflow search filters and Ray storage folder names: letters, digits and . _ - only
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ----------------------------------------------------------------------------------------------------------------------
# arguments


PROG_ENV = "UCR_PROG"  # set by `ucr run STAGE` / `ucr sweep`: the command the user typed, for usage lines


def program_name() -> str:
    """How the user started this entry point: ``$UCR_PROG`` (``ucr run train``), else ``python -m jobs.train`` for
    ``python -m`` runs (argparse alone would say ``train.py``)."""
    if os.environ.get(PROG_ENV):
        return os.environ[PROG_ENV]
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.parent.name in ("jobs", "tune"):
        return f"python -m {script.parent.name}.{script.stem}"
    return script.name


def run_main(entry) -> None:
    """A job's entry point ``entry()``: a ValueError (a bad preset, override, path or setting, whose message says what
    to change) ends the job with ``error: <message>`` and exit status 1 instead of a traceback, as ``ucr`` and
    ``tune.sweep`` do; any other exception keeps its traceback."""
    try:
        entry()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def base_parser(description: str, preset_default: str | None = "demo",
                preset_help: str = "shipped preset or YAML path (default: demo)") -> argparse.ArgumentParser:
    """The arguments every job takes; ``description`` (the module docstring) keeps its line breaks and examples."""
    parser = argparse.ArgumentParser(prog=program_name(), description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=preset_default, help=preset_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable), e.g. --set model.n_components=3")
    parser.add_argument("--out", default=None,
                        help="experiment folder or s3:// URI for data, latents, models, reports "
                             "(default: runs/<preset>)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)")
    parser.add_argument("--run-name", default=None, type=checked_run_name,
                        help="experiment run name: MLflow parent run and Ray Train run names derive from it; "
                             "resubmitting with the same name resumes (default: the preset name)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name (default: ucr-<preset>)")
    parser.add_argument("--parent-run-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """What the evaluate stage takes, wherever it runs (the evaluate job, the pipeline job, a sweep's best trial)."""
    parser.add_argument("--model-name", default="ucr", help="registered model name (default: ucr)")
    parser.add_argument("--alias", default="champion", help="registry alias a better model moves to (default: champion)")
    parser.add_argument("--steps", type=int, help="evaluation sampler steps (default: diffusion.sampler_steps)")
    parser.add_argument("--max-chunks", type=int, help="evaluate at most N chunks per split")
    parser.add_argument("--steps-curve", type=int, nargs="*", default=[],
                        help="also measure RTF and SI-SDRi at these step counts on the test split")
    parser.add_argument("--generate-n", type=int, default=8, help="excerpts generated for the generation metrics")


def config_from(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.preset, args.overrides)


def experiment_root(args: argparse.Namespace, config: ExperimentConfig) -> str:
    return storage.absolute(args.out or os.path.join("runs", config.name))


def layout(root: str) -> dict[str, str]:
    """Where each stage reads and writes inside an experiment folder."""
    return {"data": storage.join(root, "data"), "latents": storage.join(root, "latents"),
            "decomposer": storage.join(root, "decomposer"), "supervised": storage.join(root, "supervised"),
            "prior": storage.join(root, "prior"), "codec": storage.join(root, "codec"),
            "reports": storage.join(root, "reports"),
            "ray": storage.join(root, "ray")}


class RunNameError(argparse.ArgumentTypeError, ValueError):
    """A run name that cannot be used: argparse shows its message as is; callers outside argparse catch ValueError."""


def checked_run_name(name: str) -> str:
    """``name`` if it is a usable run name, else a :class:`RunNameError` that says what is allowed."""
    if not _RUN_NAME.match(name):
        raise RunNameError(
            f"run name {name!r} may hold only letters, digits, '.', '_' and '-' (1-100 characters, starting with a "
            f"letter or digit): it names MLflow runs and Ray storage folders")
    return name


def run_name(args: argparse.Namespace, config: ExperimentConfig) -> str:
    return checked_run_name(args.run_name or config.name)  # a preset name from a user's YAML is checked too


# ----------------------------------------------------------------------------------------------------------------------
# Ray


def worker_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to ``address`` / ``$RAY_ADDRESS`` (a cluster, or the one a ``ray job submit`` runs in), or start an
    embedded local Ray. The embedded one runs with token auth disabled unless ``RAY_AUTH_MODE`` says otherwise (and says
    so on stderr): every one of its listeners is on 127.0.0.1 (:func:`pin_ray_to_loopback`; tested) and it lives as
    long as this process.

    The embedded Ray gets its dashboard on a free loopback port and every worker's State
    API points at it (``RAY_API_SERVER_ADDRESS``). Ray Train needs it: its placement-group cleaner asks the State
    API whether a run's controller died (e.g. a trial stopped by ASHA) and only then frees the run's CPUs; without
    a dashboard (or with several Ray instances on the machine to guess from) the question fails forever, warnings
    flood the log, the CPUs stay reserved and later trials time out waiting for workers."""
    import ray

    if ray.is_initialized():
        return ray
    runtime_env = {"env_vars": worker_env()}
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        # inside `ray job submit` the job's own runtime env (e.g. --runtime-env-json) is merged with ours
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        if target.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost"):
            pin_ray_to_loopback()  # else the driver resolves 127.0.0.1 to the network IP the head does not listen on
        ray.init(address=target, runtime_env=runtime_env, log_to_driver=True)
        return ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    pin_ray_to_loopback()
    port = free_port()
    api_server = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = runtime_env["env_vars"]["RAY_API_SERVER_ADDRESS"] = api_server
    ray.init(num_cpus=num_cpus, runtime_env=runtime_env, log_to_driver=True, include_dashboard=True,
             dashboard_host="127.0.0.1", dashboard_port=port, _node_ip_address="127.0.0.1")
    if os.environ["RAY_AUTH_MODE"] == "disabled":
        print("[ray] embedded Ray on 127.0.0.1 only, token auth disabled (any local user can reach it); "
              "set RAY_AUTH_MODE=token to require ~/.ray/auth_token", file=sys.stderr, flush=True)
    return ray


# Ray's single-machine mode: with this variable at "0" Ray resolves the node address to 127.0.0.1 instead of the
# machine's network address, so GCS, raylet, workers, the dashboard agent, the runtime-env agent and the metrics
# endpoint all bind loopback (measured: without it 11 listeners sat on 0.0.0.0, :: or the network address, even with
# dashboard_host and --node-ip-address set to 127.0.0.1). Inherited by every process Ray spawns.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def pin_ray_to_loopback() -> None:
    """Make a Ray started from this process (and its children) bind 127.0.0.1 only."""
    os.environ.update(LOOPBACK_RAY_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # already imported: the constant was read from the environment at import time
        constants.ENABLE_RAY_CLUSTER = False


def free_port() -> int:
    """A TCP port free on loopback right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------------
# MLflow


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a local SQLite store in ~/.ucr (artifacts beside it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    models.default_tracking_dir().mkdir(parents=True, exist_ok=True)
    return models.default_tracking_uri()


def mlflow_experiment(name: str) -> str:
    """Create or get an experiment; with the embedded SQLite store artifacts go to ~/.ucr/mlartifacts."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:///"):  # embedded store: artifacts beside the database, not in the cwd
        db_path = Path(tracking_uri()[len("sqlite:///"):])
        location = (db_path.parent / "mlartifacts" / name).absolute().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def parent_run_id(args: argparse.Namespace, config: ExperimentConfig) -> str:
    """The parent run of this experiment run name: given, found by tag, or created (then left open for stages)."""
    import mlflow
    from mlflow import MlflowClient

    if args.parent_run_id:
        return args.parent_run_id
    experiment_id = mlflow_experiment(args.experiment or f"ucr-{config.name}")
    client = MlflowClient(tracking_uri())
    name = run_name(args, config)
    found = client.search_runs([experiment_id], filter_string=f"tags.`ucr.run_name` = '{name}' and "
                                                              f"tags.`ucr.parent` = 'true'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={"ucr.run_name": name, "ucr.parent": "true",
                                                                 "ucr.preset": config.name})
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)[:500])
                                              for k, v in relevant_params(config).items()])
    return run.info.run_id


# the config sections each stage's child run records (the parent run holds the whole relevant config)
STAGE_SECTIONS = {"data": ("data",), "encode": ("codec", "data"),
                  "train": ("codec", "data", "model", "diffusion", "train"),
                  "train-supervised": ("codec", "data", "model", "diffusion", "train"),
                  "prior": ("prior", "train"), "register": (), "evaluate": ("diffusion",)}
_ENCODEC_ONLY = ("codec.weights", "codec.latent_kind", "codec.bandwidth", "codec.segment_seconds")


def relevant_params(config: ExperimentConfig, sections: tuple[str, ...] | None = None) -> dict[str, str]:
    """The resolved config as MLflow params, without the fields that do not apply to this experiment (EnCodec's
    weights and bandwidth on another codec, the one-pass settings of a multi-step separation, the remix settings
    with no remix loss, unset options); ``sections`` keeps only those (``name`` always)."""
    flat = config.to_flat_dict()
    drop = set()
    if flat.get("codec.name") != "encodec":
        drop.update(_ENCODEC_ONLY)
    if not flat.get("codec.normalize_latents"):
        drop.add("codec.normalize_scope")
    if not flat.get("data.synthetic"):
        drop.update(k for k in flat if k.startswith("data.synthetic_"))
    if not str(flat.get("diffusion.separation", "")).startswith("one_pass"):
        drop.update(("diffusion.one_pass_alpha", "diffusion.one_pass_draws"))
    if not flat.get("model.component_strides"):  # empty: every component at model.component_stride
        drop.add("model.component_strides")
    if not flat.get("model.remix_weight"):
        drop.update(("model.remix_alpha", "model.remix_teacher"))
    out = {}
    for key, value in flat.items():
        if key in drop or value is None or value == "":  # unset: the default behaviour
            continue
        if sections is not None and key != "name" and key.split(".")[0] not in sections:
            continue
        out[key] = str(value)[:500]
    return out


@contextlib.contextmanager
def stage_run(args: argparse.Namespace, config: ExperimentConfig, stage: str) -> Iterator[Any]:
    """A child MLflow run for one stage under the experiment's parent run; yields the active run."""
    import mlflow

    parent = parent_run_id(args, config)
    args.parent_run_id = parent
    client = mlflow.MlflowClient(tracking_uri())
    experiment_id = client.get_run(parent).info.experiment_id
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=parent, experiment_id=experiment_id, log_system_metrics=False):
        with mlflow.start_run(run_name=f"{run_name(args, config)}/{stage}", nested=True, experiment_id=experiment_id,
                              tags={"ucr.stage": stage, "ucr.run_name": run_name(args, config)}) as child:
            mlflow.log_params(relevant_params(config, STAGE_SECTIONS.get(stage)))
            started = time.monotonic()
            yield child
            mlflow.log_metric("stage_wall_seconds", time.monotonic() - started)


def log_json(name: str, data: dict) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "w") as handle:
            json.dump(data, handle, indent=1, default=str)
        mlflow.log_artifact(path)


def log_uri_artifact(uri: str, artifact_path: str | None = None) -> None:
    """Log a file or folder that may live in S3 (copied through a temporary folder) as an MLflow artifact."""
    import mlflow

    if not storage.is_remote(uri):
        (mlflow.log_artifacts if os.path.isdir(uri) else mlflow.log_artifact)(uri, artifact_path)
        return
    with tempfile.TemporaryDirectory() as folder:
        fs, path = storage.filesystem(uri)
        target = os.path.join(folder, os.path.basename(path.rstrip("/")))
        fs.get(path, target, recursive=fs.isdir(path))
        (mlflow.log_artifacts if os.path.isdir(target) else mlflow.log_artifact)(target, artifact_path)


def print_result(stage: str, result: dict) -> None:
    print(f"[{stage}] " + json.dumps(result, default=str), file=sys.stdout, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# console and log file


@contextlib.contextmanager
def console_to_file(path: str) -> Iterator[Any]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also every process it starts: Ray's
    daemons and workers, whose lines Ray forwards to the driver's stdout) to the file ``path``, appended; yield a
    text stream on the original console for what a person should see. Restored on exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        console.close()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
