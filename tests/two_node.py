"""A two-node Ray cluster on one machine loses a whole node during training (run by tests/test_jobs.py).

``python -m tests.two_node --cache DIR --work DIR`` must run inside a fresh network namespace (``unshare -n``): Ray's
multi-node mode binds GCS and raylet gRPC servers to every interface and resolves 127.0.0.1 to the machine's
address (measured with Ray 2.60; single-machine mode refuses a second node), so the only way to keep a two-node test
cluster off the network is a namespace whose only interface is loopback. Token auth is on as well.

The cluster: a head (3 logical CPUs) and a second node (1 CPU, resource ``node2``), both started with ``ray start``.
Training: 2 Ray Train workers placed with ``SPREAD`` (one lands on the second node). Once a checkpoint exists, every
process of the second node (its raylet and the workers it started) is killed with SIGKILL. The run must restart
from the latest checkpoint on what is left and finish. Prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def bring_up_loopback() -> None:
    """A new network namespace starts with ``lo`` down; bring it up (the ``ip link set lo up`` ioctl)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def session_processes(session: int) -> list[tuple[int, str]]:
    """``[(pid, command line)]`` of every process whose session id is ``session``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == session:  # fields after the name: state ppid pgrp session
            found.append((int(entry), cmdline))
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=5)
    args = parser.parse_args()
    work = Path(args.work)
    bring_up_loopback()
    token = work / "ray_token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    os.environ.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # multi-node mode (the namespace keeps it off the network)
        # notice a dead node within seconds, not the default ~30 s
        "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000",
        "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"})
    os.environ.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = 36379
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-gpus", "0", "--disable-usage-stats"]
    log = open(work / "ray_start.log", "w")
    # Ray's session folder holds AF_UNIX sockets (paths <= 107 bytes): a pytest tmp_path is too deep for them
    ray_temp = tempfile.mkdtemp(prefix="ucr2n-", dir="/tmp")
    head = subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "3",
                             "--include-dashboard", "false", "--temp-dir", ray_temp, *common],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node2 = None
    result: dict = {"interfaces": sorted(name for _, name in socket.if_nameindex())}  # of this namespace
    try:
        import mlflow
        import ray

        from jobs import common as job_common
        from jobs import train
        from ucr.config import load_config

        deadline = time.monotonic() + 120
        while True:  # the head is up when a driver can connect
            if head.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {head.returncode}: see {work / 'ray_start.log'}")
            try:
                ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
                break
            except Exception:  # noqa: BLE001 - still starting
                if time.monotonic() > deadline or head.poll() is not None:
                    raise
                time.sleep(1)
        node2 = subprocess.Popen([ray_cli, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                                  "--resources", json.dumps({"node2": 1}), *common],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second node did not join within 120 s")
            time.sleep(0.5)
        result["nodes_before"] = 2
        config = load_config("smoke", {"train.steps": args.steps, "train.checkpoint_every": args.every,
                                       "train.log_every": args.log_every})
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        run_id = mlflow.MlflowClient().create_run(job_common.mlflow_experiment("two-node")).info.run_id
        result["run_id"] = run_id
        trainer = train.make_torch_trainer("decomposer", config, args.cache, str(work / "run"), str(work / "ray_train"),
                                           name="two-node", workers=2, max_failures=3, mlflow_run_id=run_id,
                                           quiet=True, placement_strategy="SPREAD")
        killed: list[tuple[int, str]] = []

        def kill_the_second_node() -> None:
            until = time.monotonic() + 300
            while time.monotonic() < until:
                checkpoints = sorted((work / "run" / "checkpoints").glob("step-*.pt"))
                members = session_processes(node2.pid)
                result["node2_processes"] = sorted({cmd[:40] for _, cmd in members})
                if checkpoints and any("RayTrainWorker" in cmd for _, cmd in members):
                    result["checkpoint_at_kill"] = checkpoints[-1].name
                    for pid, cmd in members:
                        try:
                            os.kill(pid, signal.SIGKILL)
                            program = os.path.basename(cmd.split(" ", 1)[0])  # raylet's path is long
                            killed.append((pid, f"{program}: {cmd[:60]}"))
                        except ProcessLookupError:
                            pass
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=kill_the_second_node, daemon=True)
        watcher.start()
        outcome = trainer.fit()
        watcher.join(timeout=5)
        result.update(killed=killed, error=None if outcome.error is None else repr(outcome.error),
                      final_step=outcome.metrics.get("step"), nodes_after=len([n for n in ray.nodes() if n["Alive"]]))
        ray.shutdown()
    finally:
        for process in (node2, head):
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(process.pid, signal.SIGKILL)
        for process in (node2, head):  # whatever outlived its `ray start` (never `ray stop`: it is machine-wide)
            if process is not None:
                for pid, _ in session_processes(process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        shutil.rmtree(ray_temp, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
