"""The experiment on Ray, end to end on loopback: a local Ray head, a real MLflow server and an S3 endpoint
(infra/local/stack.sh), `ray job submit` of the pipeline, a killed worker, a stopped-and-resubmitted job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.listeners import describe, is_loopback, listening_sockets, process_tree

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "infra" / "local" / "stack.sh"


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*export\s+(\w+)=(.*)$", line)
        if match:
            env[match.group(1)] = match.group(2).strip().strip("'\"")
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    env = {**os.environ, "UCR_PYTHON": sys.executable}
    up = subprocess.run(["bash", str(STACK), "up", "--dir", str(folder), "--auth", "disabled"], env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    values = read_env(folder / "stack.env")
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield values
    finally:
        subprocess.run(["bash", str(STACK), "down", "--dir", str(folder)], env=env, capture_output=True,
                       timeout=120)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def submit(stack: dict, *job_args: str, wait: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir .` with the stack's storage and tracking variables for the job."""
    import json

    env_vars = {k: v for k, v in stack.items() if k.startswith(("AWS_", "MLFLOW_"))}
    env_vars["OMP_NUM_THREADS"] = "1"
    command = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", stack["RAY_DASHBOARD"],
               "--working-dir", str(ROOT), "--runtime-env-json", json.dumps({"env_vars": env_vars})]
    if not wait:
        command.append("--no-wait")
    command += ["--", "python", *job_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": stack["RAY_DASHBOARD"]})


@pytest.mark.timeout(1200)
def test_pipeline_job_on_the_local_stack(stack):
    from mlflow import MlflowClient

    from ucr import storage

    out = f"{stack['UCR_S3_URI']}/exp-smoke"
    done = submit(stack, "-m", "jobs.pipeline", "--preset", "smoke", "--out", out, "--workers", "2", "--quiet",
                  "--run-name", "smoke-job", "--experiment", "ucr-test", "--max-chunks", "4")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Separation on the test split" in done.stdout
    # data, caches and checkpoints live in S3
    for path in ("data/train", "latents/train/manifest.json", "latents/test/manifest.json",
                 "decomposer/final.pt", "prior/final.pt", "reports/test/report.md"):
        assert storage.exists(storage.join(out, path)), path
    assert any(name.startswith("step-") for name in storage.listdir(storage.join(out, "decomposer", "checkpoints")))
    # checkpoints are written once, to the run folder: Ray's own storage holds run state, not a second copy
    filesystem, ray_path = storage.filesystem(storage.join(out, "ray"))
    assert filesystem.find(ray_path) and not [p for p in filesystem.find(ray_path) if p.endswith(".pt")]
    # the MLflow server holds a parent run with one child per stage, params, metrics, artifacts, the registry
    client = MlflowClient(stack["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("ucr-test")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ucr.run_name` = 'smoke-job'")
    parents = [r for r in runs if r.data.tags.get("ucr.parent") == "true"]
    children = {r.data.tags.get("ucr.stage"): r for r in runs if r.data.tags.get("ucr.stage")}
    assert len(parents) == 1
    assert set(children) == {"data", "encode", "train", "prior", "register", "evaluate"}
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in children.values())
    train = children["train"]
    assert train.data.params["model.n_components"] == "2"
    assert len(client.get_metric_history(train.info.run_id, "loss")) >= 2
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"config.json", "train_loss.png"} <= artifacts
    evaluate = children["evaluate"]
    assert "val_si_sdri" in evaluate.data.metrics
    assert any(a.path == "test_report" for a in client.list_artifacts(evaluate.info.run_id))
    # a smoke model rarely beats doing nothing: the alias moves only when it does, the reason is on the version
    registered = max(client.search_model_versions("name = 'ucr' and tags.`ucr.run_name` = 'smoke-job'"),
                     key=lambda v: int(v.version))
    assert registered.tags["ucr.promotion"] in registered.description
    if registered.tags["ucr.promotion"].startswith("promoted"):
        assert client.get_model_version_by_alias("ucr", "champion").version == registered.version


@pytest.mark.timeout(900)
def test_codec_job_trains_exports_and_is_tracked(stack, slakh_root):
    """`ray job submit` of jobs.codec: checkpoints and the exported weights in S3, a tracked `codec` stage, and
    weights that load through codec.weights."""
    from mlflow import MlflowClient

    from ucr import storage
    from ucr.codec import build_codec
    from ucr.config import CodecConfig

    out = f"{stack['UCR_S3_URI']}/exp-codec"
    tiny = ["codec.train_filters=4", "codec.train_latent_channels=8", "codec.train_segment_seconds=0.25",
            "train.batch_size=2", "train.steps=4", "train.checkpoint_every=2", "train.log_every=2"]
    done = submit(stack, "-m", "jobs.codec", "--preset", "smoke", "--out", out, "--data", str(slakh_root),
                  "--quiet", "--run-name", "codec-job", "--experiment", "ucr-test", *sum([["--set", o] for o in tiny], []))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for path in ("codec/final.pt", "codec/checkpoints/step-00000004.pt", "codec/encodec/config.json",
                 "codec/encodec/model.safetensors"):
        assert storage.exists(storage.join(out, path)), path
    codec = build_codec(CodecConfig(name="encodec", weights=storage.join(out, "codec", "encodec"),
                                    latent_kind="continuous", train_latent_channels=8))
    assert codec.channels == 8
    client = MlflowClient(stack["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("ucr-test").experiment_id],
                              filter_string="tags.`ucr.run_name` = 'codec-job' and tags.`ucr.stage` = 'codec'")
    assert len(runs) == 1 and [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [2, 4]


@pytest.mark.timeout(900)
def test_sweep_job_on_the_local_stack(stack):
    """`ray job submit` of a sweep: trials on the head's Ray, Tune state on S3, trial runs in the MLflow server."""
    from mlflow import MlflowClient

    from ucr import storage

    out = f"{stack['UCR_S3_URI']}/exp-sweep"
    done = submit(stack, "-m", "tune.sweep", "--space", "tune/spaces/smoke.yaml", "--trials", "2", "--concurrency",
                  "2", "--out", out, "--name", "job-sweep", "--experiment", "ucr-test-sweep", "--quiet",
                  "--max-chunks", "2")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "[sweep] 2 trials" in done.stdout
    assert storage.exists(storage.join(out, "sweeps", "job-sweep", "tune", "job-sweep"))
    client = MlflowClient(stack["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("ucr-test-sweep")
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.`ucr.sweep` = 'job-sweep'")
    assert len(trials) == 2 and all("val_si_sdri" in run.data.metrics for run in trials)


@pytest.mark.timeout(1200)
def test_stopped_job_resumes_when_resubmitted(stack, tmp_path):
    out = str(tmp_path / "exp")
    common = ["--preset", "smoke", "--out", out, "--quiet", "--run-name", "resume-me", "--experiment", "ucr-test"]
    prepared = submit(stack, "-m", "jobs.pipeline", *common, "--skip-prior", "--set", "train.steps=2",
                      "--max-chunks", "2")
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    long_run = ["--set", "train.steps=3000", "--set", "train.checkpoint_every=20", "--set", "train.log_every=20"]
    started = submit(stack, "-m", "jobs.train", *common, *long_run, wait=False, timeout=120)
    job_id = re.search(r"raysubmit_\w+", started.stdout + started.stderr).group(0)
    checkpoints = Path(out) / "decomposer" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
            int(p.stem.split("-")[1]) >= 20 for p in checkpoints.glob("step-*.pt")):
        time.sleep(1)
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "job", "stop", "--address", stack["RAY_DASHBOARD"], job_id], capture_output=True,
                   timeout=120)
    reached = max(int(p.stem.split("-")[1]) for p in checkpoints.glob("step-*.pt"))
    assert reached >= 20
    again = submit(stack, "-m", "jobs.train", *common, "--set", f"train.steps={reached + 10}",
                   "--set", "train.checkpoint_every=20", "--set", "train.log_every=5")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = re.search(r"resumed at step (\d+)", again.stdout + again.stderr)
    assert resumed and int(resumed.group(1)) >= 20


@pytest.mark.timeout(900)
def test_killed_worker_costs_at_most_one_checkpoint_interval(stack, tmp_path, slakh_root):
    """A worker process is killed mid-training; Ray restarts the group from the latest checkpoint."""
    import mlflow
    import ray

    from jobs import common, train
    from ucr.codec import MDCTCodec
    from ucr.config import load_config
    from ucr.data.latents import EncodeSettings, encode_split

    cache = str(tmp_path / "cache")
    encode_split(EncodeSettings.from_config(load_config("smoke"), str(slakh_root), "train", False, 2),
                 MDCTCodec(), cache, progress=False)
    steps, every, log_every = 150, 25, 5
    config = load_config("smoke", {"train.steps": steps, "train.checkpoint_every": every,
                                   "train.log_every": log_every})
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = mlflow.MlflowClient().create_run(common.mlflow_experiment("kill-test")).info.run_id
    common.pin_ray_to_loopback()  # the stack's head listens on loopback only
    ray.init(address=stack["RAY_ADDRESS"], runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        trainer = train.make_torch_trainer("decomposer", config, cache, str(tmp_path / "run"),
                                           str(tmp_path / "ray"), name="kill-test", workers=2, max_failures=2,
                                           mlflow_run_id=run_id, quiet=True)
        killed = []

        def kill_a_worker() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if list((tmp_path / "run" / "checkpoints").glob("step-*.pt")):
                    found = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True)
                    pids = [int(p) for p in found.stdout.split()]
                    if pids:
                        os.kill(pids[-1], signal.SIGKILL)
                        killed.append(pids[-1])
                        return
                time.sleep(0.2)

        watcher = threading.Thread(target=kill_a_worker, daemon=True)
        watcher.start()
        result = trainer.fit()
        watcher.join(timeout=5)
    finally:
        ray.shutdown()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert killed, "no worker was killed (training finished first?)"
    assert result.error is None and result.metrics["step"] == steps
    with result.checkpoint.as_directory() as folder:  # Ray holds a pointer to the run folder's checkpoint, not a copy
        pointer = json.loads(Path(folder, train.POINTER_FILE).read_text())
        assert sorted(os.listdir(folder)) == [train.POINTER_FILE]
    assert pointer == {"checkpoint": str(tmp_path / "run" / "checkpoints" / f"step-{steps:08d}.pt"), "step": steps}
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    logged_steps = [m.step for m in history]
    replayed = (len(logged_steps) - len(set(logged_steps))) * log_every
    assert replayed <= every, (replayed, every)  # at most the steps since the last checkpoint are redone
    assert sorted(set(logged_steps)) == list(range(log_every, steps + 1, log_every))
    shutil.rmtree(tmp_path / "ray", ignore_errors=True)


@pytest.mark.timeout(900)
def test_losing_a_whole_node_costs_at_most_one_checkpoint_interval(tmp_path, slakh_root):
    """A head plus a second node (`ray start --address`, token auth, in a network namespace that has only loopback);
    the second node's raylet and workers are killed mid-training; the run restarts from the latest checkpoint on the
    head and finishes, and MLflow's history has every step (tests/two_node.py)."""
    import mlflow

    from ucr.codec import MDCTCodec
    from ucr.config import load_config
    from ucr.data.latents import EncodeSettings, encode_split

    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -n` (a private network namespace keeps the two-node cluster off the network)")
    cache = str(tmp_path / "cache")
    encode_split(EncodeSettings.from_config(load_config("smoke"), str(slakh_root), "train", False, 2),
                 MDCTCodec(), cache, progress=False)
    steps, every, log_every = 120, 20, 5
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    probe = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.two_node", "--cache", cache,
                            "--work", str(tmp_path), "--steps", str(steps), "--every", str(every),
                            "--log-every", str(log_every)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=800)
    lines = [line for line in probe.stdout.splitlines() if line.startswith("RESULT ")]
    assert probe.returncode == 0 and lines, probe.stdout[-3000:] + probe.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["interfaces"] == ["lo"]  # nothing of this cluster was reachable from the network
    killed = " ".join(cmd for _, cmd in result["killed"])
    assert "raylet" in killed and "RayTrainWorker" in killed, result["killed"]  # the node, not only a worker
    assert result["nodes_before"] == 2 and result["nodes_after"] == 1
    assert result["error"] is None and result["final_step"] == steps
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged_steps = [m.step for m in client.get_metric_history(result["run_id"], "loss")]
    replayed = (len(logged_steps) - len(set(logged_steps))) * log_every
    assert replayed <= every, (replayed, every)  # at most one checkpoint interval is redone
    assert sorted(set(logged_steps)) == list(range(log_every, steps + 1, log_every))  # nothing lost in MLflow


EMBEDDED_RAY_PROBE = """
import json, os, sys, time
sys.path[:0] = [sys.argv[1]]
import ray  # imported before init_ray on purpose: the pin must work on an already-imported Ray
from jobs.common import init_ray
from tests.listeners import listening_sockets, process_tree
init_ray(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
time.sleep(2)
print("LISTENERS " + json.dumps(listening_sockets(process_tree(os.getpid()))))
ray.shutdown()
"""


def test_embedded_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    res = subprocess.run([sys.executable, "-c", EMBEDDED_RAY_PROBE, str(ROOT)], env=env, capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "token auth disabled" in res.stderr  # the log says auth is off
    line = next(l for l in res.stdout.splitlines() if l.startswith("LISTENERS "))
    found = [tuple(f) for f in json.loads(line[len("LISTENERS "):])]
    assert len(found) >= 6, describe(found)  # GCS, raylet, dashboard, agents, worker: the probe saw them
    off = [text for (pid, ip, port), text in zip(found, describe(found)) if not is_loopback(ip)]
    assert not off, f"embedded Ray listening off loopback: {off}"


@pytest.mark.parametrize("name", ["a' or '1'='1", "x y", "../up", "", ".hidden", "n" * 101])
def test_run_names_that_would_break_a_filter_or_a_folder_are_refused(name, capsys):
    """Run names go into MLflow filter strings and Ray storage folders: a quote, a space or a path is refused with
    a message that says what is allowed, before anything runs."""
    import argparse

    from jobs.common import base_parser, checked_run_name, run_name

    with pytest.raises(SystemExit):
        base_parser("t").parse_args(["--run-name", name])
    assert "may hold only letters, digits" in capsys.readouterr().err
    with pytest.raises(ValueError, match="may hold only letters"):
        checked_run_name(name)
    preset_named = argparse.Namespace(run_name=None)
    with pytest.raises(ValueError, match="may hold only letters"):
        run_name(preset_named, type("Config", (), {"name": name})())
    assert checked_run_name("sweep-demo_2.1") == "sweep-demo_2.1"


def test_train_job_reads_the_latents_it_is_given_and_refuses_a_missing_cache(tmp_path, slakh_root):
    """``--latents`` points a train / prior job at a cache encoded outside its experiment folder (the validation
    split comes from the same root); without it the job reads OUT/latents; a cache that is not there is refused
    before a run is opened or Ray started, with what to do."""
    from jobs import common, train
    from ucr.codec import MDCTCodec
    from ucr.config import load_config
    from ucr.data.latents import EncodeSettings, encode_split

    root = tmp_path / "encoded"
    for split in ("train", "validation"):
        encode_split(EncodeSettings.from_config(load_config("smoke"), str(slakh_root), split, True, 1),
                     MDCTCodec(), str(root / split), progress=False)
    out = tmp_path / "exp"
    args = train.parser().parse_args(["--preset", "smoke", "--out", str(out), "--latents", str(root)])
    config = common.config_from(args)
    paths = common.layout(common.experiment_root(args, config))
    assert train.training_input(args, paths, "decomposer") == str(root / "train")
    settings = train.validation_settings(args, config, train.latents_root(args, paths), "decomposer")
    assert settings["val_cache"] == str(root / "validation")

    default = train.parser().parse_args(["--preset", "smoke", "--out", str(out)])
    with pytest.raises(ValueError, match="pass --latents") as refused:
        train.training_input(default, paths, "prior")
    assert str(out / "latents") in str(refused.value) and "jobs.encode" in str(refused.value)
    with pytest.raises(ValueError, match="no latent cache"):
        train.run(default)  # refused before MLflow or Ray: nothing of the experiment is created
    assert not out.exists()


@pytest.mark.parametrize("stage, job_args, says", [
    ("train", ["--preset", "smoke"], "no latent cache for split 'train'"),
    ("prior", ["--preset", "smoke"], "pass --latents"),
    ("pipeline", ["--preset", "smoke", "--set", "train.steps=-5"], "train.steps"),
])
def test_jobs_end_on_bad_input_with_a_sentence_not_a_traceback(stage, job_args, says, tmp_path):
    """A job given what it cannot use (no latent cache, an impossible override) ends with status 1 and
    ``error: <what to change>`` on stderr, as `ucr` does, and leaves no experiment folder behind."""
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "-m", f"jobs.{stage}", *job_args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and says in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not out.exists()
