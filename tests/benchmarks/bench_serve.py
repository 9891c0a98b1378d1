"""Load test of the Serve API on loopback: separation requests of N-second audio at a fixed concurrency, with and
without ``@serve.batch``; prints requests/s and p50/p95/p99 latency and fails on any error. Bounded in request count
and wall time (requests not started before the deadline are skipped and reported).

Run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python -m tests.benchmarks.bench_serve [--requests 200] [--seconds 10]
        [--concurrency 8] [--modes batched,unbatched] [--max-minutes 10] [--model CHECKPOINT_OR_MODELS_URI]
Without --model a tiny smoke-preset model is trained first (seconds): the numbers then measure the serving path
(upload, decode, queueing, batching, codec, a small U-Net), not a production-size model.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tests.test_serve import audio_file, free_port, start_ray, stop_ray, train_tiny_models, wait_for_http


def deploy(args: dict, name: str = "bench", route_prefix: str = "/") -> None:
    from ray import serve

    from serve.app import app_builder

    serve.run(app_builder(args), name=name, route_prefix=route_prefix)


def start_serve(port: int) -> None:
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})


def load_test(url: str, data: bytes, requests_total: int, concurrency: int, deadline: float, params: dict,
              headers: dict | None = None) -> dict:
    """Send ``requests_total`` POST /separate at ``concurrency``; returns counts, rate and latency percentiles."""
    import requests

    local = __import__("threading").local()

    def one(_index: int) -> tuple[int, float] | None:
        if time.monotonic() > deadline:
            return None
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        try:
            response = session.post(f"{url}/separate", files={"file": ("mix.wav", data)}, params=params,
                                    headers=headers or {}, timeout=300)
            status = response.status_code
        except requests.RequestException:
            status = -1
        return status, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for r in pool.map(one, range(requests_total)) if r is not None]
    elapsed = time.perf_counter() - started
    latencies = np.array([latency for status, latency in results if status == 200])
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    percentiles = np.percentile(latencies, [50, 95, 99]) if len(latencies) else [float("nan")] * 3
    return {"sent": len(results), "skipped": requests_total - len(results), "ok": int(len(latencies)),
            "errors": len(results) - int(len(latencies)), "statuses": statuses, "elapsed_s": elapsed,
            "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
            "p50": float(percentiles[0]), "p95": float(percentiles[1]), "p99": float(percentiles[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="separation requests per mode")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the uploaded audio")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--modes", default="batched,unbatched", help="comma list of batched, unbatched")
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="wall-time budget per mode")
    parser.add_argument("--model", default=None, help="checkpoint path/URI or models:/<name>@<alias>")
    parser.add_argument("--model-cpus", type=float, default=1.0, help="num_cpus of the model replica")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per mode, alternating modes; the summary gives the median of each column")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"batched", "unbatched"}
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; use batched and/or unbatched")

    folder = Path(tempfile.mkdtemp(prefix="ucr-bench-serve-"))
    model = args.model
    if model is None:
        print("[bench] training a tiny smoke-preset model ...", flush=True)
        model = train_tiny_models(folder)["prior_v1"]
    saved, _dashboard = start_ray(num_cpus=4)
    try:
        port = free_port()
        start_serve(port)
        url = f"http://127.0.0.1:{port}"
        data = audio_file(args.seconds, channels=2, seed=1)
        params = {"steps": args.steps} if args.steps else {}
        print(f"[bench] {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} before start; model {model}", flush=True)
        rows = []
        for mode in [m for _ in range(max(1, args.repeats)) for m in modes]:
            deploy({"model": model, "batching": mode == "batched", "max_batch_size": args.max_batch_size,
                    "max_seconds": max(60.0, args.seconds), "max_upload_mb": 100, "model_num_cpus": args.model_cpus,
                    "model_max_ongoing_requests": max(8, args.concurrency),
                    "model_max_queued_requests": 4 * args.concurrency})
            wait_for_http(f"{url}/healthz")
            load_test(url, data, 2, 2, time.monotonic() + 120, params)  # warm-up
            result = load_test(url, data, args.requests, args.concurrency, time.monotonic() + 60 * args.max_minutes,
                               params)
            rows.append((mode, result))
            print(f"[bench] {mode}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in result.items()), flush=True)
        print(f"\n{args.requests} requests x {args.seconds:g} s audio, concurrency {args.concurrency}, "
              f"load average now {os.getloadavg()[0]:.1f}")
        print(f"{'mode':<10} {'sent':>5} {'ok':>5} {'errors':>6} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}")
        for mode, r in rows:
            print(f"{mode:<10} {r['sent']:>5} {r['ok']:>5} {r['errors']:>6} {r['rps']:>7.2f} {r['p50']:>7.2f} "
                  f"{r['p95']:>7.2f} {r['p99']:>7.2f}")
        if args.repeats > 1:
            print(f"\nmedian of {args.repeats} runs per mode")
            print(f"{'mode':<10} {'req/s':>7} {'p50 s':>7} {'p99 s':>7}")
            medians = {}
            for mode in modes:
                runs = [r for m, r in rows if m == mode]
                medians[mode] = {k: float(np.median([r[k] for r in runs])) for k in ("rps", "p50", "p99")}
                print(f"{mode:<10} {medians[mode]['rps']:>7.2f} {medians[mode]['p50']:>7.2f} "
                      f"{medians[mode]['p99']:>7.2f}")
            if {"batched", "unbatched"} <= set(medians):
                print(f"batched / unbatched throughput: {medians['batched']['rps'] / medians['unbatched']['rps']:.2f}x")
        if any(r["errors"] for _, r in rows):
            raise SystemExit(f"errors: {[(mode, r['statuses']) for mode, r in rows]}")
    finally:
        stop_ray(saved)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
