"""A smoke-scale sweep: Optuna over K and the learning rate, ASHA stopping trials early on the validation score,
child runs in MLflow, the best model registered; rerunning the same sweep resumes it instead of starting over; then
a prior sweep over the registered decomposer on the held-out masked denoising loss."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1500)
def test_smoke_sweep_and_resume(tmp_path):
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "tune.sweep", "--space", "tune/spaces/smoke.yaml", "--trials", "4",
               "--concurrency", "2", "--out", str(tmp_path / "exp"), "--name", "smoke-sweep", "--quiet",
               "--register-best", "--max-chunks", "2", "--results-dir", str(tmp_path / "results")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    match = re.search(r"\[sweep\] (\d+) trials, (\d+) stopped early by ASHA", output)
    assert match and int(match.group(1)) == 4
    assert int(match.group(2)) >= 1, "ASHA stopped no trial early"
    finished = re.findall(r"\[sweep\] trial (\d+)/4 (?:finished|failed): \w+ val_si_sdri ", output)
    assert finished == ["1", "2", "3", "4"], output[-3000:]  # progress per trial (one line each with --quiet)
    assert (tmp_path / "results" / "summary.md").exists()
    assert (tmp_path / "results" / "optimization_history.png").exists()
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("ucr-smoke")
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.`ucr.sweep` = 'smoke-sweep'")
    assert len(trials) == 4
    parents = {run.data.tags.get("mlflow.parentRunId") for run in trials}
    assert len(parents) == 1 and None not in parents
    assert any("val_si_sdri" in run.data.metrics for run in trials)
    versions = client.search_model_versions("name = 'ucr'")
    assert any(v.tags.get("ucr.run_name") == "smoke-sweep-best" for v in versions)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "[sweep] resuming smoke-sweep" in again.stdout + again.stderr
    assert len(client.search_runs([experiment.experiment_id],
                                  filter_string="tags.`ucr.sweep` = 'smoke-sweep'")) == 4  # no new trials
    # a prior sweep over the best trial's frozen decomposer
    decomposer = re.search(r"\[sweep\] registering the best trial \w+ from (\S+)", output).group(1)
    prior_command = [sys.executable, "-m", "tune.sweep", "--space", "tune/spaces/smoke_prior.yaml", "--trials", "2",
                     "--concurrency", "2", "--out", str(tmp_path / "exp"), "--name", "smoke-prior-sweep",
                     "--quiet", "--decomposer", decomposer, "--results-dir", str(tmp_path / "prior_results")]
    prior = subprocess.run(prior_command, env=env, capture_output=True, text=True, timeout=600)
    assert prior.returncode == 0, (prior.stdout + prior.stderr)[-5000:]
    assert re.search(r"\[sweep\] 2 trials, \d+ stopped early by ASHA; best val_prior_loss = \d", prior.stdout)
    prior_trials = client.search_runs([experiment.experiment_id],
                                      filter_string="tags.`ucr.sweep` = 'smoke-prior-sweep'")
    assert len(prior_trials) == 2 and all("val_prior_loss" in run.data.metrics for run in prior_trials)
    assert "all_masked_prob" in (tmp_path / "prior_results" / "summary.md").read_text()


def test_prior_sweep_without_decomposer_says_what_to_do(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "tune.sweep", "--space", "tune/spaces/smoke_prior.yaml",
                           "--out", str(tmp_path / "exp"), "--quiet"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0
    assert "needs a trained decomposer" in done.stderr and "--decomposer" in done.stderr


@pytest.mark.parametrize("name", ["demo", "demo_prior", "paper", "paper_prior", "smoke", "smoke_prior"])
def test_every_value_a_shipped_space_can_draw_makes_a_valid_config(name):
    """Each choice, and both ends of each range, of every shipped space is a config the trial can build (a typo or
    an out-of-range bound would otherwise surface only inside a trial)."""
    import yaml

    from tune.sweep import SweepSpace, trial_config

    space = SweepSpace.load(f"tune/spaces/{name}.yaml")
    for key, spec in space.params.items():
        values = spec["values"] if spec["type"] == "choice" else [spec["low"], spec["high"]]
        for value in values:
            encoded = yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, list) else value
            config = trial_config(space, {key: encoded}, [])
            section, field = key.split(".")
            got = getattr(getattr(config, section), field)
            assert (list(got) if isinstance(got, tuple) else got) == value, (key, value)
