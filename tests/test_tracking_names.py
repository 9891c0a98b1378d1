"""What reaches MLflow: only the config fields that apply, metric names that group and say their protocol, no flat
learning-rate line; and the pipeline's console when its logs go to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.common import STAGE_SECTIONS, relevant_params
from ucr.config import load_config


def test_params_leave_out_what_does_not_apply():
    mdct = relevant_params(load_config("demo", {"codec.name": "mdct"}))  # an analytic codec: no weights, no bandwidth
    assert mdct["codec.name"] == "mdct" and "model.n_components" in mdct
    for key in ("codec.weights", "codec.bandwidth", "codec.latent_kind", "model.remix_alpha", "train.init_from"):
        assert key not in mdct, key
    assert "diffusion.one_pass_alpha" in mdct  # the demo separates in one pass: it applies
    encodec = relevant_params(load_config("demo", {"codec.name": "encodec", "codec.hop_length": 320,
                                                   "diffusion.separation": "independent",
                                                   "model.remix_weight": 0.5}))
    assert encodec["codec.weights"] == "facebook/encodec_24khz" and "model.remix_alpha" in encodec
    assert "diffusion.one_pass_alpha" not in encodec
    # a stage's child run holds its sections only; the parent holds the whole relevant config once
    evaluate = relevant_params(load_config("demo", {"codec.name": "mdct"}), STAGE_SECTIONS["evaluate"])
    assert set(evaluate) == {"name"} | {k for k in mdct if k.startswith("diffusion.")}
    assert relevant_params(load_config("demo"), STAGE_SECTIONS["register"]) == {"name": "demo"}


def test_training_metrics_lr_only_when_it_changes_and_grouped_validation_names():
    from jobs.train import StepLogger

    logger = StepLogger(None, None, prefix="")
    logger.last_lr = 5e-4  # what the training job seeds it with: the rate at the current step
    assert logger.filtered({"loss": 0.5, "lr": 5e-4}) == {"loss": 0.5}  # constant: it is the train.lr param
    assert logger.filtered({"val_si_sdri": 1.5, "val_si_sdri_Drums": 2.0, "val_prior_loss": 0.2}) == {
        "val/si_sdri/mean/whole_fixed_quick": 1.5, "val/si_sdri/Drums/whole_fixed_quick": 2.0,
        "val/prior_loss/masked_denoising": 0.2}
    warming = StepLogger(None, None, prefix="")
    warming.last_lr = 1e-5
    assert [warming.filtered({"lr": lr}) for lr in (2e-5, 3e-5, 3e-5)] == [{"lr": 2e-5}, {"lr": 3e-5}, {}]


def test_evaluation_metric_names_say_split_source_and_protocol():
    from jobs.evaluate import metric_names

    def row(method, source, matching, value, protocol="windowed", reference="original"):
        return {"method": method, "source": source, "reference": reference, "protocol": protocol,
                "matching": matching, **{m: {"mean": value} for m in ("si_sdri", "si_sdr", "si_sir", "si_sar")}}

    report = {"sources": ["Drums", "Bass"], "results": [
        row("ucr", "Drums", "fixed", 1.0), row("ucr", "Bass", "fixed", 3.0),
        row("ucr", "Drums", "per-example", 9.0), row("ucr", "Drums", "fixed", 9.0, protocol="whole"),
        row("ucr", "Drums", "fixed", 9.0, reference="codec"),
        row("oracle IRM", "Drums", "labelled", 10.0), row("oracle IRM", "Bass", "labelled", 12.0)],
        "diagnostics": {"sources": ["Drums", "Bass"], "component_x_source": [[1.0, -5.0], [-4.0, float("nan")]],
                        "z_correlation": [[1.0, 0.2], [0.2, 1.0]]}}
    names = metric_names(report, "test")
    assert names["test/si_sdri/Drums/windowed_fixed"] == 1.0 and names["test/si_sdr/Bass/windowed_fixed"] == 3.0
    assert names["test/si_sdri/mean/windowed_fixed"] == 2.0
    assert names["test_baselines/oracle_IRM/si_sdri/Bass/windowed_labelled"] == 12.0
    assert names["test_baselines/oracle_IRM/si_sdri/mean/windowed_labelled"] == 11.0
    assert names["test_diagnostics/si_sdr_whole/component0/Bass"] == -5.0
    assert "test_diagnostics/si_sdr_whole/component1/Bass" not in names  # not finite: left out
    assert names["test_diagnostics/z_correlation/0_1"] == 0.2
    assert 9.0 not in names.values()  # per-example matching, whole chunks and codec references stay in the report
    assert all(name.count("/") >= 2 for name in names)


def test_console_keeps_to_headings_while_every_process_logs_to_the_file(tmp_path):
    """The plumbing `ucr demo` uses: this process's prints, a child process's output (as Ray's daemons and workers
    write) and warnings land in the log file; only what is written to the console stream reaches the terminal."""
    log = tmp_path / "out" / "demo.log"
    script = textwrap.dedent(f"""
        import subprocess, sys, warnings
        from jobs.common import console_to_file
        with console_to_file({str(log)!r}) as console:
            print("=== stage train ===", file=console)
            for i in range(2000):
                print(f"Reporting training result {{i}}")
            subprocess.run([sys.executable, "-c", "import sys\\nfor i in range(2000): print('(worker) line', i); "
                            "print('(worker) err', file=sys.stderr)"])
            warnings.warn("a library warning")
            print("| method | SI-SDRi |", file=console)
        print("after: back on the console")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["=== stage train ===", "| method | SI-SDRi |", "after: back on the console"]
    assert done.stderr == ""
    text = log.read_text()
    assert text.count("Reporting training result") == 2000 and text.count("(worker) line") == 2000
    assert "(worker) err" in text and "a library warning" in text


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_demo_console_log_file_and_what_mlflow_holds(tmp_path):
    """`ucr demo` at the smoke preset (the demo's own plumbing: 2 Ray Train workers, the supervised reference, the
    prior): a short console with the table, the logs in OUT/demo.log; in MLflow the validation curve of training, no
    learning-rate line, the promotion reason on the version (~2-3 minutes on 2 cores)."""
    from mlflow import MlflowClient

    out = tmp_path / "demo_out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the demo's own store, demo_out/mlflow.db
    done = subprocess.run([str(Path(sys.executable).with_name("ucr")), "demo", "--preset", "smoke", "--out",
                           str(out)], capture_output=True, timeout=1100, cwd=tmp_path, env=env)
    console = (done.stdout + done.stderr).decode(errors="replace")  # bytes: a bar's "\r" redraws are not new lines
    assert done.returncode == 0, console[-3000:] + (out / "demo.log").read_text()[-3000:]
    assert console.count("\n") < 80, console
    assert "=== stage train ===" in console and "=== stage evaluate ===" in console
    assert "| ucr |" in console and "| mixture passthrough |" in console  # the final table
    assert "Reporting training result" not in console and "RayTrainWorker" not in console
    log = (out / "demo.log").read_text()
    assert "RayTrainWorker" in log and "[register]" in log

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ucr-smoke")
    runs = {r.data.tags.get("ucr.stage", "parent"): r for r in client.search_runs([experiment.experiment_id])}
    train = runs["train"]
    assert len(client.get_metric_history(train.info.run_id, "val/si_sdri/mean/whole_fixed_quick")) >= 2
    assert "lr" not in train.data.metrics and train.data.params["train.lr"] == "0.001"
    assert "codec.weights" not in runs["parent"].data.params and "codec.weights" not in train.data.params
    assert "model.n_components" not in runs["evaluate"].data.params
    assert "test/si_sdri/Drums/windowed_fixed" in runs["evaluate"].data.metrics
    assert "train_validation.png" in {a.path for a in client.list_artifacts(train.info.run_id)}
    version = client.get_model_version("ucr", "1")
    assert version.tags["ucr.promotion"] in version.description
    assert ("promoted" in console) and ("registry:" in console)


def test_in_process_commands_are_tracked_like_the_jobs(tmp_path, monkeypatch):
    """`ucr train` and `ucr evaluate` with MLFLOW_TRACKING_URI set: the jobs' layout (experiment ucr-<preset>, a
    parent run per run name, a child run per stage), the step metrics, the checkpoint and the report's metrics."""
    from mlflow import MlflowClient

    from tests.conftest import SR, write_slakh_track
    from ucr.cli import main
    from ucr.codec import MDCTCodec
    from ucr.data.latents import EncodeSettings, encode_split

    stems = {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3)}
    for i in range(2):
        write_slakh_track(tmp_path / "slakh", "train", f"Track{i + 1:05d}", stems, seed=i)
    settings = EncodeSettings(data_root=str(tmp_path / "slakh"), layout="slakh", split="train",
                              sources=("Drums", "Bass"), mix="mean", sample_rate=SR, chunk_seconds=0.5,
                              silence_rms=0.01, with_stems=True, tracks_per_shard=2)
    encode_split(settings, MDCTCodec(), str(tmp_path / "latents" / "train"), progress=False)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    run = str(tmp_path / "run")
    assert main(["train", "--preset", "smoke", "--data", str(tmp_path / "latents" / "train"), "--out", run,
                 "--quiet", "--run-name", "tracked", "--set", "train.steps=4", "--set", "train.log_every=2"]) == 0
    assert main(["evaluate", "--model", run, "--data", str(tmp_path / "latents"), "--split", "train", "--out",
                 str(tmp_path / "eval"), "--no-nmf", "--max-chunks", "2", "--quiet", "--run-name", "tracked"]) == 0

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("ucr-smoke")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ucr.parent") == "true"]
    assert parent.data.tags["ucr.run_name"] == "tracked"
    children = {r.data.tags["ucr.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"train", "evaluate"}
    train = children["train"]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [2, 4]
    assert train.data.params["train.steps"] == "4"
    assert "checkpoint/final.pt" in [f.path for f in client.list_artifacts(train.info.run_id, "checkpoint")]
    scores = [name for name in children["evaluate"].data.metrics if name.startswith("train/si_sdri/")]
    assert scores, children["evaluate"].data.metrics
