#!/usr/bin/env python3
"""A local development stack: a Ray head, an MLflow tracking server and an S3 endpoint, all on 127.0.0.1.

    infra/local/stack.sh up     [--dir DIR] [--only ray,mlflow,s3] [--auth token|disabled] [--num-cpus N]
                                [--artifacts auto|local|s3] [--bucket NAME] [--timeout SECONDS]
    infra/local/stack.sh status [--dir DIR] [--only ...]
    infra/local/stack.sh down   [--dir DIR] [--only ...] [--purge]

``up`` writes ``DIR/stack.env`` (``source`` it) and ``DIR/state.json`` (what ``down`` and ``status`` read).
DIR defaults to ``$UCR_STACK_DIR`` or ``runs/stack`` in the repository.

Ownership, and why ``down`` never runs ``ray stop``: ``ray stop`` kills every Ray process of the user (it matches
process names), including other clusters, notebooks and test runs. Instead every process this script starts gets
two environment variables, ``UCR_STACK_ID`` (random per ``up``) and ``UCR_STACK_SERVICE``. Environment variables
are inherited by everything a service spawns: Ray's GCS, raylet, dashboard, workers, job supervisors and job
drivers (which Ray starts in their own sessions, out of reach of a process-group kill), MLflow's uvicorn worker.
``down`` sends SIGTERM to the process group each service leads (every service is started in a new session) and to
every process of this user whose environment carries the stack's id and the service's name, waits, then sends
SIGKILL to what is left. Nothing without the marker is signalled. The Ray head also gets its own ``--temp-dir``,
so a plain ``ray.init()`` elsewhere on the machine does not find this head through ``/tmp/ray/ray_current_cluster``.

Only the standard library is used, except boto3 (from the same environment) to create the bucket.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("s3", "mlflow", "ray")  # start order; stopped in reverse
HOST = "127.0.0.1"
REGION = "us-east-1"
DEFAULT_BUCKET = "ucr-local"


class StackError(RuntimeError):
    """A failure the user can act on; printed without a traceback."""


# ------------------------------------------------------------------------------------------------ small helpers
def log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (held open together so none repeats)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def http_get(url: str, headers: dict | None = None, timeout: float = 3.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def short_temp_root() -> Path:
    """A short base directory for Ray's temp dir: Ray's unix socket paths must stay under ~107 characters."""
    for cand in ("/tmp", tempfile.gettempdir()):
        if os.path.isdir(cand) and os.access(cand, os.W_OK):
            return Path(cand)
    return Path(tempfile.gettempdir())


# ------------------------------------------------------------------------------------------------ process ownership
def _environ_of(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _cmd_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def marked_pids(stack_id: str, service: str | None = None) -> set[int]:
    """PIDs of this user's processes whose environment carries the stack id (and service, if given)."""
    found: set[int] = set()
    me = os.getpid()
    if Path("/proc/self/environ").exists():
        uid = os.getuid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
            except OSError:
                continue
            env = _environ_of(int(entry))
            if env and env.get("UCR_STACK_ID") == stack_id and (service is None or env.get("UCR_STACK_SERVICE") == service):
                found.add(int(entry))
        return {p for p in found if pid_alive(p)}
    # No /proc (macOS): BSD ps prints the environment after the command with `e`.
    out = subprocess.run(["ps", "-U", str(os.getuid()), "-ww", "-e", "-o", "pid=,command="],
                         capture_output=True, text=True).stdout
    needle = f"UCR_STACK_ID={stack_id}"
    for line in out.splitlines():
        pid_s, _, cmd = line.strip().partition(" ")
        if needle in cmd.split() and (service is None or f"UCR_STACK_SERVICE={service}" in cmd.split()):
            if pid_s.isdigit() and int(pid_s) != me:
                found.add(int(pid_s))
    return found


def owned(pid: int, stack_id: str) -> bool:
    """True if ``pid`` is alive and carries this stack's marker (guards against PID reuse)."""
    if not pid_alive(pid):
        return False
    env = _environ_of(pid)
    if env is not None:
        return env.get("UCR_STACK_ID") == stack_id
    return pid in marked_pids(stack_id)


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


def _signal_all(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    left = {p for p in pids if pid_alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if pid_alive(p)}
    return left


def _ray_stages(pids: set[int], leader: int | None) -> list[set[int]]:
    """The order `ray stop` uses, restricted to our processes: raylet, then the rest, then GCS, then the leader."""
    def is_(pid, binary):
        first = _cmd_of(pid).split(" ", 1)[0]
        return first.endswith("/" + binary) or first == binary

    raylet = {p for p in pids if is_(p, "raylet")}
    gcs = {p for p in pids if is_(p, "gcs_server")}
    lead = {leader} & pids if leader else set()
    return [raylet, pids - raylet - gcs - lead, gcs, lead]


def stop_service(name: str, info: dict, stack_id: str, grace: float) -> list[int]:
    """Stop one service and everything it spawned; returns the PIDs signalled.

    1. SIGTERM the leader (the process this script started, after checking it still carries the marker). For Ray
       that is `ray start --block`, whose SIGTERM handler drains the node and stops raylet, dashboard, GCS, ... in
       order: the same clean shutdown `ray stop` gives, limited to this head.
    2. Whatever still carries the marker (job drivers run in sessions of their own; anything a crash left behind)
       gets SIGTERM (Ray's in `ray stop` order: raylet, the rest, GCS), then SIGKILL after a short wait.
    """
    leader = info.get("pid")
    signalled: set[int] = set()
    if leader and owned(leader, stack_id):
        signalled.add(leader)
        _signal_all([leader], signal.SIGTERM)
        _wait_gone({leader}, grace)
    left = marked_pids(stack_id, name)
    if left:
        signalled |= left
        for stage in (_ray_stages(left, None) if name == "ray" else [left]):
            if stage:
                _signal_all(stage, signal.SIGTERM)
                _wait_gone(stage, 3.0)
    left = {p for p in signalled if pid_alive(p)} | marked_pids(stack_id, name)
    if left:
        log(f"{name}: {len(left)} process(es) needed SIGKILL: "
            + ", ".join(f"{p} [{_proc_state(p)}] {_cmd_of(p)[:80]}" for p in sorted(left)))
        signalled |= left
        _signal_all(left, signal.SIGKILL)
        _wait_gone(left, 5.0)
    return sorted(signalled)


# ------------------------------------------------------------------------------------------------ state files
class Stack:
    def __init__(self, directory: Path, python: str):
        self.dir = directory.resolve()
        self.python = python
        self.state_path = self.dir / "state.json"
        self.env_path = self.dir / "stack.env"
        self.logs = self.dir / "logs"

    def load(self) -> dict:
        if not self.state_path.exists():
            return {}
        return json.loads(self.state_path.read_text())

    def save(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_path)
        self.write_env(state)

    # The env file: everything a shell, a test or `ray job submit` needs to use the running services.
    def env_vars(self, state: dict) -> dict[str, str]:
        services = state.get("services", {})
        env: dict[str, str] = {"UCR_STACK_DIR": str(self.dir)}
        if "ray" in services:
            r = services["ray"]
            env.update(RAY_ADDRESS=r["gcs_address"], RAY_API_SERVER_ADDRESS=r["dashboard_url"],
                       RAY_DASHBOARD=r["dashboard_url"], RAY_AUTH_MODE=r["auth_mode"],
                       # a driver connecting to this loopback-only head must not resolve 127.0.0.1 to the network IP
                       RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
            if r["auth_mode"] == "token":
                env["RAY_AUTH_TOKEN_PATH"] = r["token_path"]
        if "mlflow" in services:
            env["MLFLOW_TRACKING_URI"] = services["mlflow"]["url"]
        if "s3" in services:
            s = services["s3"]
            env.update(AWS_ENDPOINT_URL=s["url"], MLFLOW_S3_ENDPOINT_URL=s["url"],
                       AWS_ACCESS_KEY_ID=s["access_key_id"], AWS_SECRET_ACCESS_KEY=s["secret_access_key"],
                       AWS_DEFAULT_REGION=REGION, UCR_S3_BUCKET=s["bucket"], UCR_S3_URI=f"s3://{s['bucket']}")
        return env

    def write_env(self, state: dict) -> None:
        lines = ["# Written by infra/local/stack.py; `source` this file to use the local stack.",
                 "# The AWS keys are random per stack and only valid for the local moto endpoint."]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.env_vars(state).items()]
        fd = os.open(self.env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -------------------------------------------------------------------------------------------- starting
    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], stack_id: str,
               drop: tuple[str, ...] = ()) -> subprocess.Popen:
        """Start ``cmd`` in a new session, marked with the stack id, output to DIR/logs/NAME.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if k not in drop}
        # A job's entrypoint (`python -m jobs...`) is looked up on PATH: put this interpreter's bin/ first so
        # jobs run in the project's environment, not whatever `python` the shell finds first.
        bindir = str(Path(self.python).parent)
        base["PATH"] = os.pathsep.join([bindir] + [d for d in base.get("PATH", "").split(os.pathsep) if d != bindir])
        full_env = {**base, **env, "UCR_STACK_ID": stack_id, "UCR_STACK_SERVICE": name}
        logf = open(self.logs / f"{name}.log", "ab")
        logf.write(f"\n$ {shlex.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=str(self.dir), start_new_session=True)
        logf.close()
        (self.dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc

    def _wait(self, name: str, proc: subprocess.Popen, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_err = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with code {proc.returncode} while starting. "
                                 f"Last lines of {self.logs / (name + '.log')}:\n{tail(self.logs / (name + '.log'))}")
            try:
                if ready():
                    return
            except Exception as e:  # noqa: BLE001 - any failure just means "not ready yet"
                last_err = f"{type(e).__name__}: {e}"
            time.sleep(0.3)
        raise StackError(f"{name} was not ready after {timeout:.0f} s ({last_err or 'no answer'}). "
                         f"Last lines of {self.logs / (name + '.log')}:\n{tail(self.logs / (name + '.log'))}")

    def start_s3(self, stack_id: str, bucket: str) -> tuple[subprocess.Popen, dict]:
        (port,) = free_ports(1)
        info = {"url": f"http://{HOST}:{port}", "bucket": bucket,
                # moto accepts any credentials: random ones keep every file free of fixed keys.
                "access_key_id": "UCRLOCAL" + secrets.token_hex(6).upper(),
                "secret_access_key": secrets.token_urlsafe(30)}
        cmd = [self.python, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        proc = self._spawn("s3", cmd, {}, stack_id)
        info["pid"] = proc.pid
        return proc, info

    def s3_ready_and_bucket(self, info: dict) -> bool:
        status, _ = http_get(info["url"] + "/")
        if status != 200:
            return False
        import boto3  # the project's environment has it (moto[server] depends on it)

        client = boto3.client("s3", endpoint_url=info["url"], region_name=REGION,
                              aws_access_key_id=info["access_key_id"],
                              aws_secret_access_key=info["secret_access_key"])
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if info["bucket"] not in names:
            client.create_bucket(Bucket=info["bucket"])
        return True

    def start_mlflow(self, stack_id: str, artifacts: str, s3: dict | None) -> tuple[subprocess.Popen, dict]:
        (port,) = free_ports(1)
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if artifacts == "s3":
            if s3 is None:
                raise StackError("--artifacts s3 needs the s3 service in the same stack (drop --only or add s3)")
            destination = f"s3://{s3['bucket']}/mlflow-artifacts"
            env.update(AWS_ENDPOINT_URL=s3["url"], MLFLOW_S3_ENDPOINT_URL=s3["url"], AWS_DEFAULT_REGION=REGION,
                       AWS_ACCESS_KEY_ID=s3["access_key_id"], AWS_SECRET_ACCESS_KEY=s3["secret_access_key"])
        else:
            destination = str(self.dir / "artifacts")
        cmd = [self.python, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
               "--artifacts-destination", destination,
               "--host", HOST, "--port", str(port), "--workers", "1"]
        proc = self._spawn("mlflow", cmd, env, stack_id)
        return proc, {"pid": proc.pid, "url": f"http://{HOST}:{port}", "artifacts_destination": destination}

    def start_ray(self, stack_id: str, auth: str, num_cpus: int, extra_env: dict[str, str]) -> tuple[subprocess.Popen, dict]:
        gcs, dash, client, nm, om, agent_http, agent_grpc, rtenv, metrics = free_ports(9)
        digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:10]
        temp_dir = short_temp_root() / f"ucr-ray-{digest}"
        env = dict(extra_env)
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's single-machine mode: without it Ray resolves 127.0.0.1 to
        # the machine's network address and GCS, raylet, workers and agents listen off loopback despite
        # --node-ip-address (measured; the same setting as jobs/common.py's LOOPBACK_RAY_ENV)
        env.update(RAY_AUTH_MODE=auth, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        # `down` sends SIGTERM to `ray start --block`, which drains the node first (30 s by default); a dev head
        # has no traffic to hand over.
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S",
                       os.environ.get("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "3"))
        info = {"gcs_address": f"{HOST}:{gcs}", "dashboard_url": f"http://{HOST}:{dash}", "auth_mode": auth,
                "temp_dir": str(temp_dir), "num_cpus": num_cpus, "python": self.python}
        if auth == "token":
            token_path = self.dir / "ray_auth_token"
            if not token_path.exists() or not token_path.read_text().strip():
                fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
            env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
            info["token_path"] = str(token_path)
        cmd = [self.python, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               "--node-ip-address", HOST, "--port", str(gcs),
               "--include-dashboard", "true", "--dashboard-host", HOST, "--dashboard-port", str(dash),
               "--ray-client-server-port", str(client), "--node-manager-port", str(nm),
               "--object-manager-port", str(om), "--dashboard-agent-listen-port", str(agent_http),
               "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(rtenv),
               "--metrics-export-port", str(metrics),
               "--num-cpus", str(num_cpus), "--num-gpus", "0", "--temp-dir", str(temp_dir),
               "--disable-usage-stats"]
        cmd += shlex.split(os.environ.get("UCR_STACK_RAY_ARGS", ""))
        # ray start must not see a RAY_ADDRESS/token from the caller's shell (e.g. an older stack.env)
        proc = self._spawn("ray", cmd, env, stack_id, drop=("RAY_ADDRESS", "RAY_AUTH_TOKEN"))
        info["pid"] = proc.pid
        return proc, info

    def ray_headers(self, info: dict) -> dict[str, str]:
        if info.get("auth_mode") == "token":
            return {"Authorization": "Bearer " + Path(info["token_path"]).read_text().strip()}
        return {}

    def ray_ready(self, info: dict) -> bool:
        # /api/version answers once the dashboard is up; /api/jobs/ only once the job manager (and GCS) are ready.
        status, _ = http_get(info["dashboard_url"] + "/api/version", self.ray_headers(info))
        if status != 200:
            return False
        status, _ = http_get(info["dashboard_url"] + "/api/jobs/", self.ray_headers(info))
        return status == 200

    @staticmethod
    def mlflow_ready(info: dict) -> bool:
        status, body = http_get(info["url"] + "/health")
        return status == 200

    # -------------------------------------------------------------------------------------------- commands
    def up(self, only: list[str], auth: str, num_cpus: int, artifacts: str, bucket: str, timeout: float) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.load()
        services = state.get("services", {})
        stack_id = state.get("stack_id")
        running = {n for n, i in services.items() if stack_id and owned(i.get("pid", 0), stack_id)}
        stale = set(services) - running
        for name in stale:  # forget services whose processes are gone (a reboot, a kill)
            log(f"{name}: recorded process is gone; starting it again")
            services.pop(name)
        if not running:
            stack_id = secrets.token_hex(8)
            services = {}
        wanted = [n for n in SERVICES if n in only and n not in running]
        if not wanted:
            log("already running: " + ", ".join(sorted(running)))
            self.save({"stack_id": stack_id, "services": services})
            print(self.env_path)
            return 0
        if artifacts == "auto":
            artifacts = "s3" if ("s3" in wanted or "s3" in running) else "local"
        started: dict[str, subprocess.Popen] = {}
        state = {"stack_id": stack_id, "services": services}
        try:
            if "s3" in wanted:
                proc, info = self.start_s3(stack_id, bucket)
                started["s3"] = proc
                self._wait("s3", proc, lambda: self.s3_ready_and_bucket(info), timeout)
                services["s3"] = info
                self.save(state)
                log(f"s3      {info['url']}  bucket s3://{info['bucket']}")
            pending = []
            if "mlflow" in wanted:
                proc, info = self.start_mlflow(stack_id, artifacts, services.get("s3"))
                started["mlflow"] = proc
                pending.append(("mlflow", proc, info, lambda info=info: self.mlflow_ready(info)))
            if "ray" in wanted:
                # The head (and so every job's driver) sees the stack's MLflow and S3 settings.
                partial = {"stack_id": stack_id, "services": {**services, **{p[0]: p[2] for p in pending}}}
                extra = {k: v for k, v in self.env_vars(partial).items() if not k.startswith("RAY_")}
                proc, info = self.start_ray(stack_id, auth, num_cpus, extra)
                started["ray"] = proc
                pending.append(("ray", proc, info, lambda info=info: self.ray_ready(info)))
            for name, proc, info, ready in pending:  # they start concurrently; wait for each in turn
                self._wait(name, proc, ready, timeout)
                services[name] = info
                self.save(state)
                log(f"{name:<7} {info.get('url') or info['dashboard_url']}"
                    + (f"  (GCS {info['gcs_address']}, auth {info['auth_mode']})" if name == "ray" else ""))
        except BaseException:
            log("start-up failed; stopping what this run started")
            for name in reversed(SERVICES):
                if name in started:
                    stop_service(name, {"pid": started[name].pid}, stack_id, grace=5)
                    services.pop(name, None)
            self.save(state)
            raise
        self.save(state)
        log(f"environment: source {self.env_path}")
        print(self.env_path)
        return 0

    def down(self, only: list[str], purge: bool, grace: float = 15.0) -> int:
        state = self.load()
        if not state:
            log(f"nothing recorded in {self.dir}; nothing to stop")
            return 0
        stack_id = state["stack_id"]
        services = state.get("services", {})
        for name in reversed(SERVICES):
            if name not in only or name not in services:
                continue
            info = services[name]
            pids = stop_service(name, info, stack_id, grace)
            log(f"{name}: stopped ({len(pids)} process(es))")
            if name == "ray" and purge and info.get("temp_dir"):
                shutil.rmtree(info["temp_dir"], ignore_errors=True)
            services.pop(name)
            (self.dir / f"{name}.pid").unlink(missing_ok=True)
        if services:
            self.save(state)
        else:
            self.state_path.unlink(missing_ok=True)
            self.env_path.unlink(missing_ok=True)
            if purge:
                shutil.rmtree(self.dir, ignore_errors=True)
        return 0

    def status(self, only: list[str]) -> int:
        state = self.load()
        services = state.get("services", {})
        stack_id = state.get("stack_id", "")
        ok = True
        for name in SERVICES:
            if name not in only:
                continue
            info = services.get(name)
            if info is None:
                print(f"{name:<7} not started")
                ok = False
                continue
            alive = owned(info["pid"], stack_id)
            answer = "-"
            if alive:
                try:
                    if name == "ray":
                        answer = "ready" if self.ray_ready(info) else "not answering"
                    elif name == "mlflow":
                        answer = "ready" if self.mlflow_ready(info) else "not answering"
                    else:
                        answer = "ready" if http_get(info["url"] + "/")[0] == 200 else "not answering"
                except OSError as e:
                    answer = f"not answering ({e})"
            ok &= alive and answer == "ready"
            where = info.get("url") or f"{info['dashboard_url']} (GCS {info['gcs_address']}, auth {info['auth_mode']})"
            procs = len(marked_pids(stack_id, name)) if alive else 0
            print(f"{name:<7} {'running' if alive else 'dead':<8} pid {info['pid']:<8} {procs:>3} proc  {answer:<14} {where}")
        if services:
            print(f"env     {self.env_path}")
        return 0 if ok else 1


def parse_only(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in SERVICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown service(s) {bad}; choose from {','.join(SERVICES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stack.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--dir", type=Path, default=Path(os.environ.get("UCR_STACK_DIR") or REPO / "runs" / "stack"),
                   help="state, logs, MLflow store and stack.env (default: $UCR_STACK_DIR or runs/stack)")
    p.add_argument("--only", type=parse_only, default=list(SERVICES), help="comma list of ray,mlflow,s3")
    p.add_argument("--auth", choices=["token", "disabled"],
                   default=os.environ.get("UCR_STACK_AUTH") or os.environ.get("RAY_AUTH_MODE") or "token",
                   help="Ray auth mode (default: token; or $UCR_STACK_AUTH / $RAY_AUTH_MODE)")
    p.add_argument("--num-cpus", type=int, default=int(os.environ.get("UCR_STACK_NUM_CPUS", "2")))
    p.add_argument("--artifacts", choices=["auto", "local", "s3"], default="auto",
                   help="MLflow artifact destination: DIR/artifacts or s3://BUCKET/mlflow-artifacts (auto: s3 when "
                        "the s3 service runs)")
    p.add_argument("--bucket", default=DEFAULT_BUCKET)
    p.add_argument("--timeout", type=float, default=float(os.environ.get("UCR_STACK_TIMEOUT", "120")),
                   help="seconds to wait for each service to answer")
    p.add_argument("--purge", action="store_true", help="down: also delete DIR and Ray's temp/log directory")
    a = p.parse_args(argv)
    stack = Stack(a.dir, os.environ.get("UCR_PYTHON") or sys.executable)
    try:
        if a.command == "up":
            return stack.up(a.only, a.auth, a.num_cpus, a.artifacts, a.bucket, a.timeout)
        if a.command == "down":
            return stack.down(a.only, a.purge)
        return stack.status(a.only)
    except StackError as e:
        log(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
