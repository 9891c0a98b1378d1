"""The local stack (infra/local/stack.py): up, every service answers on loopback, down stops only its own processes.

Starts real processes (a Ray head, an MLflow server, a moto S3 endpoint); about 30 s on 2 busy cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.listeners import describe, is_loopback, listening_sockets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "infra" / "local" / "stack.py"


def _load_stack_module():
    spec = importlib.util.spec_from_file_location("ucr_local_stack", STACK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _clean_env() -> dict:
    """The caller's environment without anything that would point the stack at another cluster."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "UCR_STACK", "MLFLOW_", "AWS_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _stack(*args: str, directory: Path, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STACK), *args, "--dir", str(directory)], env=_clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture
def bystander():
    """A process that looks like Ray to a name-based killer (`ray stop`, `pkill raylet`) but is not ours."""
    proc = subprocess.Popen(["bash", "-c", "exec -a raylet sleep 300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_up_answers_then_down_stops_only_its_own(tmp_path, bystander):
    mod = _load_stack_module()
    directory = tmp_path / "stack"
    default_marker = Path("/tmp/ray/ray_current_cluster")
    marker_before = default_marker.read_text() if default_marker.exists() else None
    t0 = time.monotonic()
    state: dict = {}
    ours: set[int] = set()
    try:
        res = _stack("up", "--timeout", "120", directory=directory)
        assert res.returncode == 0, res.stderr
        env = read_env_file(directory / "stack.env")
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                    "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_DEFAULT_REGION", "UCR_S3_BUCKET"):
            assert env.get(key), f"{key} missing from stack.env"
        for key in ("RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
            assert env[key].startswith("http://127.0.0.1:"), env[key]
        assert env["RAY_AUTH_MODE"] == "token"
        assert oct(Path(env["RAY_AUTH_TOKEN_PATH"]).stat().st_mode & 0o777) == "0o600"

        # Ray: the dashboard/job API answers with the token, and refuses without it.
        token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        status, body = _get(env["RAY_API_SERVER_ADDRESS"] + "/api/version", auth)
        assert status == 200 and json.loads(body)["ray_version"] == version("ray")
        assert _get(env["RAY_API_SERVER_ADDRESS"] + "/api/jobs/", auth)[0] == 200
        assert _get(env["RAY_API_SERVER_ADDRESS"] + "/api/jobs/")[0] == 401

        # MLflow
        assert _get(env["MLFLOW_TRACKING_URI"] + "/health")[0] == 200

        # S3 through s3fs, configured only from the env file
        import s3fs

        os_env = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
        old = {k: os.environ.get(k) for k in os_env}
        os.environ.update(os_env)
        try:
            fs = s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)
            fs.pipe(f"{env['UCR_S3_BUCKET']}/probe.txt", b"hello")
            assert fs.cat(f"{env['UCR_S3_BUCKET']}/probe.txt") == b"hello"
            assert any(p.endswith("probe.txt") for p in fs.ls(env["UCR_S3_BUCKET"], refresh=True))
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

        res = _stack("status", directory=directory, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count("ready") == 3, res.stdout

        res = _stack("up", directory=directory, timeout=60)  # idempotent
        assert res.returncode == 0 and "already running" in res.stderr, res.stderr

        state = json.loads((directory / "state.json").read_text())
        for name in ("ray", "mlflow", "s3"):
            pids = mod.marked_pids(state["stack_id"], name)
            assert state["services"][name]["pid"] in pids, name
            ours |= pids
        assert len(mod.marked_pids(state["stack_id"], "ray")) >= 4  # gcs, raylet, dashboard, ... all marked
        # every listener of every process of the stack (Ray's GCS, raylet, workers, agents, metrics; MLflow; S3)
        found = listening_sockets(mod.marked_pids(state["stack_id"]))
        assert len(found) >= 8, describe(found)
        off = [line for (pid, ip, port), line in zip(found, describe(found)) if not is_loopback(ip)]
        assert not off, f"listening off loopback: {off}"
        assert bystander.pid not in ours
    finally:
        res = _stack("down", "--purge", directory=directory, timeout=90)
    assert res.returncode == 0, res.stderr
    assert state, "up did not record a stack"
    assert not mod.marked_pids(state["stack_id"]), "processes of the stack survived `down`"
    assert not any(_alive(p) for p in ours)
    assert bystander.poll() is None, "down stopped a process that was not the stack's"
    now = default_marker.read_text() if default_marker.exists() else None
    assert now == marker_before, "the stack touched /tmp/ray/ray_current_cluster (plain ray.init() would find it)"
    assert time.monotonic() - t0 < 120


def test_down_without_stack_is_a_no_op(tmp_path):
    res = _stack("down", directory=tmp_path / "none", timeout=30)
    assert res.returncode == 0
    res = _stack("status", directory=tmp_path / "none", timeout=30)
    assert res.returncode == 1 and "not started" in res.stdout
