"""Fuzz the Serve API from its own OpenAPI schema with schemathesis: every operation, a bounded number of generated
requests each (valid and invalid), and one check: no response is a 5xx. Loopback only, bounded in time.

Run from the repository root (needs `pip install schemathesis`):
    OMP_NUM_THREADS=1 .venv/bin/python -m tests.benchmarks.fuzz_serve [--max-examples 30] [--max-minutes 8]
        [--seed 0]
A tiny smoke-preset model (with a prior, so /generate and /vary do real work) is trained first, in seconds. The app
requires an API key, which schemathesis sends; unauthenticated requests are covered by tests/test_serve.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.benchmarks.bench_serve import deploy, start_serve
from jobs.common import free_port
from tests.test_serve import start_ray, stop_ray, train_tiny_models, wait_for_http

API_KEY = "fuzz-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=30, help="generated requests per operation and phase")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="time budget of the schemathesis run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    executable = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not os.path.exists(executable):
        raise SystemExit("schemathesis is not installed: pip install schemathesis")

    folder = Path(tempfile.mkdtemp(prefix="ucr-fuzz-serve-"))  # the model (removed at the end)
    reports = Path(tempfile.mkdtemp(prefix="ucr-fuzz-report-"))  # the JUnit report (kept)
    print("[fuzz] training a tiny smoke-preset model ...", flush=True)
    model = train_tiny_models(folder)["prior_v1"]
    saved, _dashboard = start_ray(num_cpus=4)
    try:
        port = free_port()
        start_serve(port)
        # Small limits keep each valid request cheap; every limit is still exercised.
        deploy({"model": model, "api_key": API_KEY, "max_seconds": 5, "max_upload_mb": 2})
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz")
        command = [executable, "run", f"{url}/openapi.json", "--header", f"X-API-Key:{API_KEY}",
                   "--checks", "not_a_server_error", "--max-examples", str(args.max_examples),
                   "--seed", str(args.seed), "--max-time", str(int(60 * args.max_minutes)),
                   "--request-timeout", "120", "--continue-on-failure", "--no-color",
                   "--report", "junit", "--report-dir", str(reports)]
        print("[fuzz] " + " ".join(command), flush=True)
        done = subprocess.run(command, timeout=60 * args.max_minutes + 300)
        healthy = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/healthz"],
                                 capture_output=True, text=True).stdout
        print(f"[fuzz] schemathesis exit code {done.returncode}; /healthz afterwards: {healthy}; "
              f"report in {reports}")
        if done.returncode != 0:
            raise SystemExit(done.returncode)
    finally:
        stop_ray(saved)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
