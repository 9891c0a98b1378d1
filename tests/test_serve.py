"""The Serve HTTP API over real HTTP on loopback: a local Ray cluster, a real `mlflow server` with its registry, and a
tiny model trained at the start of the module (smoke preset, seconds).

Two applications run side by side: ``ucr`` at / (registry model ``models:/ucr-test@champion``, an API key, small
limits) and ``tight`` at /tight (a decomposer checkpoint path, no key, queues of one request) for overload.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jobs.common import free_port
from tests.conftest import SR, unknown_length_flac, write_slakh_track
from serve.source import checkpoint_name

pytestmark = pytest.mark.integration

MODEL_NAME = "ucr-test"
API_KEY = "test-key-123"
KEY = {"X-API-Key": API_KEY}


# ------------------------------------------------------------------------------------------------ helpers
def wait_for_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def train_tiny_models(root: Path) -> dict[str, str]:
    """A decomposer and two priors (different seeds, so different weights) in seconds: smoke preset, MDCT codec,
    three synthetic Slakh-layout tracks. Returns checkpoint paths."""
    from ucr.codec import MDCTCodec
    from ucr.config import load_config
    from ucr.data.latents import EncodeSettings, encode_split
    from ucr.train.tasks import build_decomposer_trainer, build_prior_trainer

    stems = {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3), "S02": ("Piano", 440.0, 0.2)}
    for i in range(3):
        write_slakh_track(root / "slakh", "train", f"Track{i + 1:05d}", stems, seed=i)
    settings = EncodeSettings(data_root=str(root / "slakh"), layout="slakh", split="train",
                              sources=("Drums", "Bass"), mix="mean", sample_rate=SR, chunk_seconds=0.5,
                              silence_rms=0.01, with_stems=True, tracks_per_shard=2)
    encode_split(settings, MDCTCodec(), str(root / "cache"), progress=False)
    config = load_config("smoke")
    build_decomposer_trainer(config, str(root / "cache"), str(root / "dec"), progress=False).fit()
    paths = {"decomposer": str(root / "dec" / "final.pt")}
    for version, seed in (("prior_v1", 0), ("prior_v2", 1)):
        build_prior_trainer(load_config("smoke", {"train.seed": seed}), str(root / "dec"), str(root / "cache"),
                            str(root / version), progress=False).fit()
        paths[version] = str(root / version / "final.pt")
    return paths


def start_mlflow_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real tracking server with the model registry (SQLite) and proxied artifacts, on loopback."""
    port = free_port()
    executable = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(folder / "mlflow-server.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([executable, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                                "--artifacts-destination", str(folder / "artifacts")],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=90, process=process)
    except Exception:
        process.terminate()
        raise
    return process, uri


def register(tracking_uri: str, name: str, checkpoint: str, alias: str = "champion") -> str:
    """Register ``checkpoint`` in the layout versions had before the register job logged pyfunc models
    (checkpoint.pt, ucr.json and MLmodel at the top of the folder; Serve still reads it, tests/test_registry.py covers
    the pyfunc layout) and point ``alias`` at the new version. Returns the version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("ucr-serve-tests")
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run() as run:
        shutil.copy(checkpoint, os.path.join(folder, "checkpoint.pt"))
        with open(os.path.join(folder, "ucr.json"), "w") as handle:
            json.dump({"source": checkpoint, "registered_by": "tests/test_serve.py"}, handle)
        with open(os.path.join(folder, "MLmodel"), "w") as handle:
            handle.write("artifact_path: model\nflavors:\n  ucr:\n    checkpoint: checkpoint.pt\n")
        mlflow.log_artifacts(folder, artifact_path="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version
    MlflowClient(tracking_uri).set_registered_model_alias(name, alias, version)
    return str(version)


def start_ray(num_cpus: int = 4) -> tuple[dict, str]:
    """A local Ray cluster with its dashboard (the REST endpoint `serve deploy` talks to), all on loopback.
    Returns (environment values to restore on shutdown, dashboard address)."""
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "OMP_NUM_THREADS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback-only test cluster
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    from jobs.common import pin_ray_to_loopback

    pin_ray_to_loopback()  # every listener on 127.0.0.1, as the project's embedded Ray
    port = free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             configure_logging=False, log_to_driver=False)
    return saved, f"http://127.0.0.1:{port}"


def stop_ray(saved: dict) -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def serve_deploy(config: dict, dashboard: str, folder: Path) -> None:
    """`serve deploy` a config dict (the production path: user_config changes reconfigure replicas in place)."""
    import yaml

    path = folder / f"serve-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    executable = shutil.which("serve") or os.path.join(os.path.dirname(sys.executable), "serve")
    done = subprocess.run([executable, "deploy", str(path), "-a", dashboard], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def wait_until_running(names: list[str], timeout: float = 180.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            status = serve.status()
        except Exception:  # noqa: BLE001 - Serve's controller may still be starting
            time.sleep(0.5)
            continue
        states = {name: status.applications[name].status if name in status.applications else None
                  for name in names}
        if all(state == "RUNNING" for state in states.values()):
            return
        failed = {name: status.applications[name].message for name, state in states.items()
                  if state in ("DEPLOY_FAILED", "UNHEALTHY")}
        assert not failed, failed
        time.sleep(0.5)
    raise TimeoutError(f"applications {names} not running after {timeout:.0f} s: {status}")


def config_for_tests(port: int, tracking_uri: str, models: dict) -> dict:
    """serve/config.yaml with test values: a free port, the test registry, small limits, one replica each, and a
    second application (`tight`: a checkpoint path, no key, queues of one request) for the overload test."""
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "serve" / "config.yaml").read_text())
    config["http_options"]["port"] = port
    (app,) = config["applications"]
    app["args"].update({"api_key": API_KEY, "max_upload_mb": 1, "max_seconds": 10, "body_idle_timeout_s": 2,
                        "body_timeout_s": 4})
    deployments = {d["name"]: d for d in app["deployments"]}
    for deployment in deployments.values():
        deployment.pop("autoscaling_config")
        deployment["num_replicas"] = 1
    deployments["UCRModel"]["max_queued_requests"] = 64  # the reconfigure test must never see a 503
    deployments["UCRModel"]["user_config"].update({"model": f"models:/{MODEL_NAME}@champion",
                                                   "tracking_uri": tracking_uri, "batch_wait_timeout_s": 0.01})
    tight = {"name": "tight", "route_prefix": "/tight", "import_path": app["import_path"],
             "args": {"model": models["decomposer"], "batching": False, "model_max_ongoing_requests": 1,
                      "model_max_queued_requests": 1}}
    config["applications"].append(tight)
    return config


def audio_file(seconds: float, rate: int = SR, channels: int = 1, fmt: str = "WAV", seed: int = 0,
               subtype: str | None = None, scale: float = 0.3) -> bytes:
    """Tones plus a little noise, encoded as a file."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = np.stack([scale * np.sin(2 * np.pi * (110 + 55 * c) * t) + 0.01 * rng.normal(size=t.shape)
                     for c in range(channels)], axis=1).astype(np.float32)  # [L, channels]
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def read_zip(content: bytes) -> tuple[dict[str, tuple[np.ndarray, int]], dict]:
    """Zip response -> ({name: (wave [L], rate)}, metadata.json)."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        waves = {}
        for name in archive.namelist():
            if name.endswith(".wav"):
                wave, rate = sf.read(io.BytesIO(archive.read(name)), dtype="float32")
                waves[name] = (wave, rate)
    return waves, metadata


# ------------------------------------------------------------------------------------------------ fixtures
@dataclass
class Service:
    url: str  # the main app (registry model, API key)
    tight: str  # the small-queue app (checkpoint path, no key)
    config: dict  # the deployed Serve config (the reconfigure test deploys changes of it)
    dashboard: str
    folder: Path
    tracking_uri: str
    models: dict


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    mlflow_process, tracking_uri = start_mlflow_server(root)  # boots while the model trains
    saved = None
    try:
        models = train_tiny_models(root)
        assert register(tracking_uri, MODEL_NAME, models["prior_v1"]) == "1"
        saved, dashboard = start_ray()
        port = free_port()
        config = config_for_tests(port, tracking_uri, models)
        serve_deploy(config, dashboard, root)
        wait_until_running(["ucr", "tight"])
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz")
        yield Service(url, f"{url}/tight", config, dashboard, root, tracking_uri, models)
    finally:
        if saved is not None:
            stop_ray(saved)
        mlflow_process.terminate()
        mlflow_process.wait(timeout=30)


def post_separate(url: str, data: bytes, filename: str = "mix.wav", headers=KEY, **params):
    import requests

    return requests.post(f"{url}/separate", files={"file": (filename, data)}, params=params, headers=headers,
                         timeout=120)


# ------------------------------------------------------------------------------------------------ settings (no Ray)
def test_settings_take_cli_strings_and_name_unknown_keys(monkeypatch, tmp_path):
    from serve.settings import AppArgs, HTTPSettings, ModelSettings

    args = AppArgs.from_dict({"batching": "false", "max_upload_mb": "2", "model_replicas": "3"})
    assert args.batching is False and args.max_upload_mb == 2.0 and args.model_replicas == 3
    with pytest.raises(ValueError, match="unknown app setting.*'modle'.*valid"):
        AppArgs.from_dict({"modle": "models:/ucr@champion"})
    with pytest.raises(ValueError, match="batching must be true or false"):
        AppArgs.from_dict({"batching": "perhaps"})
    with pytest.raises(ValueError, match="max_batch_size"):
        ModelSettings.from_dict({"max_batch_size": 0})
    monkeypatch.setenv("UCR_MODEL", "models:/other@staging")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = AppArgs().model_settings()
    assert (settings.model, settings.tracking_uri) == ("models:/other@staging", "http://127.0.0.1:5000")
    monkeypatch.delenv("UCR_API_KEY", raising=False)
    monkeypatch.delenv("UCR_API_KEY_FILE", raising=False)
    assert HTTPSettings().resolved_api_key() is None
    (tmp_path / "key").write_text("from-a-secret\n")
    monkeypatch.setenv("UCR_API_KEY_FILE", str(tmp_path / "key"))
    assert HTTPSettings().resolved_api_key() == "from-a-secret"
    monkeypatch.setenv("UCR_API_KEY", "from-env")
    assert HTTPSettings().resolved_api_key() == "from-env"
    assert HTTPSettings(api_key="explicit").resolved_api_key() == "explicit"
    # fail closed: a key that is set but empty never turns authentication off
    monkeypatch.setenv("UCR_API_KEY", "")
    with pytest.raises(ValueError, match="UCR_API_KEY is set but empty"):
        HTTPSettings().resolved_api_key()
    monkeypatch.delenv("UCR_API_KEY")
    (tmp_path / "key").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        HTTPSettings().resolved_api_key()
    monkeypatch.setenv("UCR_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot be read"):
        HTTPSettings().resolved_api_key()
    with pytest.raises(ValueError, match="empty"):
        HTTPSettings(api_key=" ").resolved_api_key()
    with pytest.raises(ValueError, match="empty"):
        AppArgs(api_key="").http_settings().resolved_api_key()


def test_middlewares_fail_closed_without_their_settings():
    """A request that reaches the app before (or without) its runtime settings is refused, never let through."""
    import asyncio
    from types import SimpleNamespace

    from serve.app import APIKeyMiddleware, UploadLimitMiddleware

    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])

    for middleware in (APIKeyMiddleware, UploadLimitMiddleware):
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "path": "/separate", "method": "POST", "headers": [],
                 "app": SimpleNamespace(state=SimpleNamespace())}  # no runtime on the app's state
        asyncio.run(middleware(inner)(scope, receive, send))
        assert not reached, f"{middleware.__name__} let a request through without its settings"
        assert sent[0]["status"] == 503, sent


def test_model_references():
    from serve.source import parse_registry_reference, resolve

    assert parse_registry_reference("models:/ucr@champion") == ("ucr", "champion", None)
    assert parse_registry_reference("models:/ucr/12") == ("ucr", None, "12")
    assert parse_registry_reference("s3://bucket/run/final.pt") is None
    with pytest.raises(ValueError, match=r"models:/<name>@<alias>"):
        parse_registry_reference("models:/ucr")
    source = resolve("s3://bucket/runs/demo/prior/final.pt")  # checkpoint URIs are read later, by the pipeline
    assert (source.name, source.version, source.checkpoint) == ("prior", None, "s3://bucket/runs/demo/prior/final.pt")
    with pytest.raises(ValueError, match="UCR_MODEL"):
        resolve("  ")


# ------------------------------------------------------------------------------------------------ happy paths
def test_health_model_and_docs(service):
    import requests

    assert requests.get(f"{service.url}/healthz", timeout=10).json()["status"] == "ok"
    info = requests.get(f"{service.url}/model", headers=KEY, timeout=30).json()
    assert (info["name"], info["version"], info["alias"]) == (MODEL_NAME, "1", "champion")
    assert info["source"] == f"models:/{MODEL_NAME}@champion"
    assert info["config"]["codec"] == "mdct" and info["config"]["n_components"] == 2
    assert info["config"]["has_prior"] and info["config"]["sources"] == ["Drums", "Bass"]
    assert info["card"]["registered_by"] == "tests/test_serve.py"
    spec = requests.get(f"{service.url}/openapi.json", headers=KEY, timeout=10).json()
    assert {"/separate", "/generate", "/vary", "/healthz", "/model"} <= set(spec["paths"])
    steps = next(p for p in spec["paths"]["/separate"]["post"]["parameters"] if p["name"] == "steps")
    assert steps["schema"]["anyOf"][0]["maximum"] == 200
    assert requests.get(f"{service.url}/docs", headers=KEY, timeout=10).status_code == 200


def test_separate_zip_from_stereo_flac_at_another_rate(service):
    response = post_separate(service.url, audio_file(1.5, rate=44100, channels=2, fmt="FLAC"), "mix.flac", seed=3)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    waves, metadata = read_zip(response.content)
    assert sorted(waves) == ["component_0.wav", "component_1.wav"]
    for wave, rate in waves.values():
        assert rate == SR and wave.shape == (int(1.5 * SR),) and np.isfinite(wave).all()
    assert metadata["model"]["version"] == "1" and metadata["n_components"] == 2
    assert metadata["steps"] == 4 and metadata["seed"] == 3  # 4: the smoke preset's diffusion.sampler_steps
    assert metadata["input"] == {"filename": "mix.flac", "format": "FLAC", "sample_rate": 44100, "channels": 2,
                                 "seconds": 1.5}
    assert metadata["duration"] == pytest.approx(1.5)
    assert json.loads(response.headers["X-UCR-Metadata"]) == metadata
    assert response.headers["X-UCR-Model-Version"] == "1"


def test_separate_one_component_as_wav_from_ogg(service):
    response = post_separate(service.url, audio_file(0.5, rate=16000, fmt="OGG", subtype="VORBIS"), "mix.ogg",
                             format="wav", component=1, steps=3, mode="mixture_consistent")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    wave, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == SR and wave.shape == (SR // 2,)
    metadata = json.loads(response.headers["X-UCR-Metadata"])
    assert metadata["steps"] == 3 and metadata["mode"] == "mixture_consistent"
    assert response.headers["X-UCR-Steps"] == "3"


def test_separate_at_a_requested_blend_level(service):
    import requests

    config = requests.get(f"{service.url}/model", headers=KEY, timeout=30).json()["config"]
    song = audio_file(0.5)
    default = post_separate(service.url, song, mode="one_pass_residual", seed=2)
    lifted = post_separate(service.url, song, mode="one_pass_residual", seed=2, alpha=0.9)
    assert default.status_code == lifted.status_code == 200, (default.text, lifted.text)
    (waves_default, meta_default), (waves_lifted, meta_lifted) = read_zip(default.content), read_zip(lifted.content)
    assert meta_default["alpha"] == config["one_pass_alpha"] and meta_lifted["alpha"] == 0.9
    # the request's alpha reached the decoder: the same seed, another blend level, other components
    assert np.abs(waves_lifted["component_0.wav"][0] - waves_default["component_0.wav"][0]).max() > 1e-4


def test_generate_returns_mixtures_and_components_reproducibly(service):
    import requests

    body = {"seconds": 0.5, "count": 2, "seed": 7, "steps": 2}
    response = requests.post(f"{service.url}/generate", json=body, headers=KEY, timeout=120)
    assert response.status_code == 200, response.text
    waves, metadata = read_zip(response.content)
    assert sorted(waves) == [f"item_{i}/{name}.wav" for i in range(2)
                             for name in ("component_0", "component_1", "mixture")]
    assert all(wave.shape == (SR // 2,) and rate == SR for wave, rate in waves.values())
    assert metadata["count"] == 2 and metadata["seed"] == 7
    again = requests.post(f"{service.url}/generate", json=body, headers=KEY, timeout=120)
    assert read_zip(again.content)[0]["item_1/mixture.wav"][0].tolist() == waves["item_1/mixture.wav"][0].tolist()


def test_vary_keeps_components_and_returns_variations(service):
    import requests

    response = requests.post(f"{service.url}/vary", files={"file": ("mix.wav", audio_file(1.0, channels=2))},
                             params={"keep": [0], "count": 2, "seed": 1, "steps": 2}, headers=KEY, timeout=120)
    assert response.status_code == 200, response.text
    waves, metadata = read_zip(response.content)
    assert len(waves) == 2 * 3 and all(wave.shape == (SR,) for wave, _ in waves.values())
    assert metadata["keep"] == [0] and metadata["task"] == "vary"


# ------------------------------------------------------------------------------------------------ the web page
def test_web_page_in_a_real_browser(service, tmp_path):
    """The page at / in headless Chromium: key prompt, separate (players, spectrograms, mute, zip download),
    generate, vary, an API error shown as a message, and /docs rendered with no asset from outside the app.
    ``UCR_SCREENSHOTS=DIR`` also saves the screenshots the README shows."""
    import requests
    from selenium.webdriver.common.by import By

    from tests.browser import chromium, wait_for, wait_for_download

    page = requests.get(f"{service.url}/", timeout=10)  # public: the shell holds no model and no data
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from outside
    assert requests.get(f"{service.url}/ui/app.js", timeout=10).status_code == 200
    info = requests.get(f"{service.url}/model", headers=KEY, timeout=30).json()
    names = info["config"]["component_names"]
    assert len(names) == info["config"]["n_components"] == 2
    song = tmp_path / "song.wav"
    song.write_bytes(audio_file(2.0, rate=16000, channels=2, seed=5))
    shots = Path(os.environ["UCR_SCREENSHOTS"]) if os.environ.get("UCR_SCREENSHOTS") else None

    def shot(driver, name: str) -> None:
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(shots / name))

    with chromium(tmp_path) as driver:
        find = driver.find_element
        driver.get(f"{service.url}/")
        card = find(By.ID, "model-card")
        wait_for(lambda: "API key" in card.text, 30, "the card to ask for the key (401)", driver)
        unlabelled = driver.execute_script(
            "return [...document.querySelectorAll('input, select')].filter(e => e.type !== 'hidden' && "
            "!e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)")
        assert unlabelled == []  # every control has a label (keyboard and screen-reader use)
        find(By.ID, "api-key").send_keys(API_KEY)
        find(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(lambda: MODEL_NAME in card.text, 30, "the model card", driver)
        assert driver.execute_script("return sessionStorage.getItem('ucr-api-key')") == API_KEY

        # separate: one player per component, with the input's duration, not silent
        find(By.ID, "separate-file").send_keys(str(song))
        find(By.ID, "separate-go").click()
        rows = wait_for(lambda: find(By.ID, "separate-result").find_elements(By.CSS_SELECTOR, ".component"), 120,
                        "the separated components", driver)
        assert [row.get_attribute("data-name") for row in rows] == names
        for row in rows:
            assert float(row.get_attribute("data-seconds")) == pytest.approx(2.0, abs=1e-3)
            assert float(row.get_attribute("data-rms-db")) > -80.0
        durations = wait_for(lambda: driver.execute_script(
            "const a = [...document.querySelectorAll('#separate-result .component audio')];"
            "return a.every(x => x.readyState >= 1) ? a.map(x => x.duration) : null"), 30, "audio metadata", driver)
        assert durations == pytest.approx([2.0] * len(names), abs=1e-2)
        assert "done in" in find(By.ID, "separate-status").text
        shot(driver, "web-separate.png")

        # mute the first component: the in-browser mix plays the others only (each at 1/K, as the model composes)
        rows[0].find_element(By.CSS_SELECTOR, "button.mute").click()
        assert rows[0].get_attribute("data-audible") == "false" and rows[1].get_attribute("data-audible") == "true"
        gains = driver.execute_script("return window.ucr.state.mixers.separation.gainValues()")
        assert gains == [0.0, 0.5]
        find(By.CSS_SELECTOR, "#separate-result button.play-mix").click()  # Web Audio graph builds without error

        # the zip download holds every component and the metadata
        find(By.CSS_SELECTOR, "#separate-result a.zip-link").click()
        with zipfile.ZipFile(wait_for_download(tmp_path, "ucr-separate.zip")) as archive:
            assert sorted(archive.namelist()) == ["component_0.wav", "component_1.wav", "metadata.json"]
            assert json.loads(archive.read("metadata.json"))["input"]["filename"] == "song.wav"

        # generate: one item = the mixture and its components
        seconds = find(By.ID, "generate-seconds")
        seconds.clear()
        seconds.send_keys("1")
        find(By.ID, "generate-go").click()
        items = wait_for(lambda: find(By.ID, "generate-result").find_elements(By.CSS_SELECTOR, ".item"), 120,
                         "a generated item", driver)
        tracks = items[0].find_elements(By.CSS_SELECTOR, ".component")
        assert sorted(t.get_attribute("data-name") for t in tracks) == sorted([*names, "mixture"])
        assert all(float(t.get_attribute("data-seconds")) == pytest.approx(1.0, abs=1e-3) for t in tracks)
        plain = items[0].find_elements(By.CSS_SELECTOR, ".component:not([data-k])")  # outside the mixer
        assert [t.get_attribute("data-name") for t in plain] == ["mixture"]
        assert not plain[0].find_elements(By.CSS_SELECTOR, "button.mute")
        shot(driver, "web-generate.png")

        # vary: keep component 0, one variation beside the original
        find(By.ID, "vary-file").send_keys(str(song))
        find(By.ID, "vary-go").click()
        items = wait_for(lambda: find(By.ID, "vary-result").find_elements(By.CSS_SELECTOR, ".item"), 120,
                         "a variation", driver)
        assert len(items[0].find_elements(By.CSS_SELECTOR, ".component")) == len(names) + 1
        assert len(find(By.ID, "vary-result").find_elements(By.CSS_SELECTOR, "audio")) == len(names) + 2

        # an unsupported file: the API's 415 as a readable message
        notes = tmp_path / "notes.txt"
        notes.write_text("not audio")
        find(By.ID, "separate-file").send_keys(str(notes))
        find(By.ID, "separate-go").click()
        error = find(By.ID, "error")
        wait_for(lambda: error.is_displayed() and "415" in error.text, 30, "the error message", driver)
        assert "Unsupported file type" in error.text and "upload WAV, FLAC or Ogg" in error.text
        shot(driver, "web-error.png")

        # /docs and /redoc render with the assets the package ships (the key as a header, as a client sends it)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": KEY})
        driver.get(f"{service.url}/docs")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"), 30, "Swagger UI", driver)
        assert "/separate" in find(By.CSS_SELECTOR, ".swagger-ui").text
        driver.get(f"{service.url}/redoc")
        wait_for(lambda: "separate" in find(By.TAG_NAME, "body").text, 30, "ReDoc", driver)
        # ReDoc's sidebar asks its vendor's CDN for a logo: the page's policy refuses it, and nothing else leaves
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        console = [entry["message"] for entry in driver.get_log("browser")]
        outside = [url for url in loaded if not url.startswith(service.url)]
        assert all(any(url in line and "Content Security Policy" in line and "blocked" in line for line in console)
                   for url in outside), (outside, console)

    if shots is not None:  # the narrow (phone) layout of a separation
        with chromium(tmp_path / "narrow", width=390, height=844) as driver:
            driver.get(f"{service.url}/")
            driver.execute_script(f"sessionStorage.setItem('ucr-api-key', '{API_KEY}'); location.reload()")
            wait_for(lambda: MODEL_NAME in driver.find_element(By.ID, "model-card").text, 30, "the card", driver)
            driver.find_element(By.ID, "separate-file").send_keys(str(song))
            driver.find_element(By.ID, "separate-go").click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#separate-result .component"), 120, "result")
            driver.save_screenshot(str(shots / "web-separate-narrow.png"))


# ------------------------------------------------------------------------------------------------ bad input
def _silent() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(SR, dtype=np.float32), SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _non_finite() -> bytes:
    wave = np.sin(np.arange(SR) / 10).astype(np.float32) * 0.3
    wave[100] = np.nan
    wave[200] = np.inf
    buffer = io.BytesIO()
    sf.write(buffer, wave, SR, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _huge() -> bytes:
    """A float WAV of finite but absurd samples (1e30): not audio."""
    buffer = io.BytesIO()
    sf.write(buffer, np.full(SR // 2, 1e30, dtype=np.float32), SR, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _format_bomb(rate: int, channels: int) -> bytes:
    """A tiny constant FLAC whose header declares a rate or channel count no recording has."""
    buffer = io.BytesIO()
    sf.write(buffer, np.full((2000, channels), 0.25, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


BAD_UPLOADS = {  # name: (filename, bytes, params, status, words the message must contain)
    "huge samples": ("mix.wav", _huge(), {}, 400, "not audio"),
    "sample rate bomb": ("mix.wav", _format_bomb(655_350, 1), {}, 400, "655350 Hz"),
    "channel bomb": ("mix.wav", _format_bomb(SR, 9), {}, 400, "9 channels"),
    "too big": ("mix.wav", b"RIFF" + bytes(1_200_000), {}, 413, "1 MB"),
    "too long": ("mix.wav", audio_file(12, rate=8000, subtype="PCM_16"), {}, 413, "at most 10 s"),
    "too long, length not in the header": ("mix.flac", unknown_length_flac(
        np.sin(np.arange(8000 * 12) / 7).astype(np.float32) * 0.3, 8000), {}, 413, "longer than 10 s"),
    "mp3": ("mix.mp3", b"ID3\x03" + bytes(2000), {}, 415, ".mp3"),
    "text type": ("notes", b"hello", {}, 415, "text/plain"),
    "garbage wav": ("mix.wav", b"this is not audio at all" * 10, {}, 400, "not a WAV, FLAC or Ogg"),
    "broken header": ("mix.wav", b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", {}, 400, "could not be read"),
    "truncated": ("mix.wav", audio_file(1.0)[:20000], {}, 400, "truncated"),
    "empty": ("mix.flac", b"", {}, 400, "empty"),
    "nan": ("mix.wav", _non_finite(), {}, 400, "NaN or infinite"),
    "silent": ("mix.wav", _silent(), {}, 400, "silent"),
    "too short": ("mix.wav", audio_file(0.05), {}, 400, "at least 0.1 s"),
    "steps 0": ("mix.wav", audio_file(0.5), {"steps": 0}, 422, "steps"),
    "steps 201": ("mix.wav", audio_file(0.5), {"steps": 201}, 422, "steps"),
    "steps text": ("mix.wav", audio_file(0.5), {"steps": "many"}, 422, "steps"),
    "seed negative": ("mix.wav", audio_file(0.5), {"seed": -1}, 422, "seed"),
    "mode": ("mix.wav", audio_file(0.5), {"mode": "greedy"}, 422, "mode"),
    "format": ("mix.wav", audio_file(0.5), {"format": "mp3"}, 422, "format"),
    "wav without component": ("mix.wav", audio_file(0.5), {"format": "wav"}, 422, "component=<k>"),
    "component out of range": ("mix.wav", audio_file(0.5), {"component": 2}, 422, "2 components"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_json_error_that_says_what_to_change(service, case):
    filename, data, params, status, words = BAD_UPLOADS[case]
    content_type = "text/plain" if case == "text type" else None
    import requests

    response = requests.post(f"{service.url}/separate", params=params, headers=KEY, timeout=60,
                             files={"file": (filename, data, content_type) if content_type else (filename, data)})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in (detail if isinstance(detail, str) else json.dumps(detail)), detail


def test_streamed_upload_over_the_limit_is_cut_off_with_413(service):
    """No Content-Length (chunked transfer): the limit applies while the body arrives."""
    import requests

    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="mix.wav"\r\n\r\n'

    def chunks():
        yield head
        for _ in range(40):
            yield bytes(64 * 1024)  # 2.5 MB in all, over the 1 MB limit
        yield b"\r\n--b--\r\n"

    response = requests.post(f"{service.url}/separate", data=chunks(), timeout=60,
                             headers={**KEY, "Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "1 MB" in response.json()["detail"]


def test_slow_senders_get_408_and_free_their_slots(service):
    """Slowloris: connections that send headers and part of a body, then nothing (or a trickle). Each is answered
    408 within the configured timeouts (2 s idle, 4 s in all here) and the service keeps answering others."""
    import socket
    from urllib.parse import urlparse

    import requests

    address = urlparse(service.url)
    request = (f"POST /separate HTTP/1.1\r\nHost: {address.hostname}\r\nX-API-Key: {API_KEY}\r\n"
               f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n").encode()
    started = time.monotonic()
    slow = []
    for _ in range(12):
        sock = socket.create_connection((address.hostname, address.port), timeout=30)
        sock.sendall(request)
        slow.append(sock)
    trickler = slow[0]
    statuses = []
    try:
        assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200  # others still served
        for sock in slow[1:]:
            statuses.append(sock.recv(4096).split(b"\r\n", 1)[0])
        for _ in range(8):  # well within the idle timeout each time, but never finishing
            try:
                trickler.sendall(b"x")
            except OSError:
                break
            time.sleep(0.5)
        statuses.append(trickler.recv(4096).split(b"\r\n", 1)[0])
    finally:
        for sock in slow:
            sock.close()
    took = time.monotonic() - started
    assert all(b" 408 " in line for line in statuses), statuses
    assert took < 20, f"slow senders were held {took:.0f} s"
    assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200


BAD_REQUESTS = {  # name: (path, json body or None, params, status, words)
    "generate seconds 0": ("/generate", {"seconds": 0}, {}, 422, "seconds"),
    "generate count 9": ("/generate", {"count": 9}, {}, 422, "count"),
    "generate unknown field": ("/generate", {"seconds": 1, "colour": "blue"}, {}, 422, "colour"),
    "generate NaN": ("/generate", "{\"seconds\": NaN}", {}, 422, "seconds"),
    "generate over the limit": ("/generate", {"seconds": 6, "count": 2}, {}, 422, "limit of 10 s"),
    "generate not json": ("/generate", "seconds=1", {}, 422, "JSON"),
    "vary keeps everything": ("/vary", None, {"keep": [0, 1]}, 422, "nothing to vary"),
    "vary unknown component": ("/vary", None, {"keep": [5]}, 422, "0..1"),
    "vary repeated component": ("/vary", None, {"keep": [0, 0]}, 422, "distinct"),
    "vary count 0": ("/vary", None, {"count": 0}, 422, "count"),
    "separate without a file": ("/separate", None, {}, 422, "file"),
    "separate alpha 1.5": ("/separate", None, {"alpha": 1.5}, 422, "alpha"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_parameters_get_422(service, case):
    import requests

    path, body, params, status, words = BAD_REQUESTS[case]
    if path == "/generate":
        kwargs = {"json": body} if isinstance(body, dict) else {
            "data": body, "headers": {**KEY, "Content-Type": "application/json"}}
    elif case == "separate without a file":
        kwargs = {"data": {"steps": "2"}}
    else:
        kwargs = {"files": {"file": ("mix.wav", audio_file(0.5))}}
    kwargs.setdefault("headers", KEY)
    response = requests.post(f"{service.url}{path}", params=params, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()["detail"]), response.text


def test_still_serving_after_bad_input(service):
    import requests

    for _ in range(3):
        post_separate(service.url, b"garbage")
        post_separate(service.url, _non_finite())
    assert requests.get(f"{service.url}/healthz", timeout=10).status_code == 200
    assert post_separate(service.url, audio_file(0.5), steps=2).status_code == 200


def test_model_without_prior_cannot_generate_and_serves_a_checkpoint_path(service):
    import requests

    info = requests.get(f"{service.tight}/model", timeout=30).json()  # no key configured on this app
    path = service.models["decomposer"]
    assert info["version"] is None and info["source"] == checkpoint_name(path)
    assert not info["config"]["has_prior"]
    response = requests.post(f"{service.tight}/generate", json={"seconds": 0.5}, timeout=60)
    assert response.status_code == 409 and "no prior" in response.json()["detail"]
    # nothing the server's file system or processes look like reaches the client
    for text in (json.dumps(info), response.text):
        assert os.path.dirname(path) not in text and "/tmp" not in text and '"pid"' not in text


# ------------------------------------------------------------------------------------------------ API key
@pytest.mark.parametrize("path", ["/model", "/openapi.json", "/docs"])
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_api_key_is_required_except_for_healthz(service, path, headers):
    import requests

    response = requests.get(f"{service.url}{path}", headers=headers, timeout=10)
    assert response.status_code == 401 and "X-API-Key" in response.json()["detail"]
    assert requests.get(f"{service.url}/healthz", headers=headers, timeout=10).status_code == 200


def test_api_key_checked_before_the_upload_is_read(service):
    response = post_separate(service.url, b"RIFF" + bytes(1_200_000), headers={})
    assert response.status_code == 401


# ------------------------------------------------------------------------------------------------ overload
def test_overload_gets_503_and_the_service_recovers(service):
    import requests

    data = audio_file(2.0)

    def one(_):
        response = requests.post(f"{service.tight}/separate", files={"file": ("mix.wav", data)},
                                 params={"steps": 100}, timeout=120)
        return response.status_code, response.headers.get("content-type", ""), response.text[:200]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    codes = [code for code, _, _ in results]
    assert set(codes) <= {200, 503}, results
    assert codes.count(503) >= 1 and codes.count(200) >= 1, codes
    busy = next(r for r in results if r[0] == 503)
    assert busy[1] == "application/json" and "capacity" in busy[2]
    assert requests.post(f"{service.tight}/separate", files={"file": ("mix.wav", data)}, params={"steps": 2},
                         timeout=60).status_code == 200


# ------------------------------------------------------------------------------------------------ new model version
def _with_model_settings(config: dict, **settings) -> dict:
    config = copy.deepcopy(config)
    model = next(d for d in config["applications"][0]["deployments"] if d["name"] == "UCRModel")
    model["user_config"].update(settings)
    return config


def test_reconfigure_to_a_new_version_under_load_drops_nothing(service):
    """Requests keep flowing while version 2 is registered, the alias moves and `serve deploy` changes the model
    deployment's user_config; every request succeeds, the replica is reconfigured in place (same process), and every
    request sent after /model reports version 2 is served by version 2. A reference that cannot be loaded then leaves
    the replica serving version 2 and says why in /model."""
    import requests

    before = requests.get(f"{service.url}/model", headers=KEY, timeout=30).json()
    data = audio_file(1.0, seed=5)
    results: list[tuple[float, int, str]] = []  # (sent at, status, model version)
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = session.post(f"{service.url}/separate", files={"file": ("mix.wav", data)},
                                            params={"steps": 2}, headers=KEY, timeout=120)
                    results.append((sent, response.status_code, response.headers.get("X-UCR-Model-Version", "")))
                except requests.RequestException as err:
                    results.append((sent, -1, repr(err)))

    def model_info() -> dict:
        return requests.get(f"{service.url}/model", headers=KEY, timeout=30).json()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        while len(results) < 6:
            time.sleep(0.05)
        assert register(service.tracking_uri, MODEL_NAME, service.models["prior_v2"]) == "2"
        serve_deploy(_with_model_settings(service.config, reload=1), service.dashboard, service.folder)
        deadline = time.monotonic() + 120
        while model_info()["version"] != "2":
            assert time.monotonic() < deadline, "version 2 was not loaded within 120 s"
            time.sleep(0.2)
        swapped = time.monotonic()
        while time.monotonic() < deadline and sum(1 for sent, _, _ in results if sent > swapped) < 6:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed
    versions = [version for _, _, version in results]
    assert "1" in versions and "2" in versions
    assert {version for sent, _, version in results if sent > swapped} == {"2"}
    after = model_info()
    assert after["alias"] == "champion" and after["reload_error"] is None
    assert after["replica"] == before["replica"]  # in place, not a new replica
    print(f"\n{len(results)} requests during the swap, 0 failed")

    serve_deploy(_with_model_settings(service.config, model=f"models:/{MODEL_NAME}@missing"), service.dashboard,
                 service.folder)
    deadline = time.monotonic() + 60
    while (info := model_info())["reload_error"] is None:
        assert time.monotonic() < deadline, "the failed reload was not reported within 60 s"
        time.sleep(0.2)
    assert info["version"] == "2" and "missing" in info["reload_error"] and "replica log" in info["reload_error"]
    assert post_separate(service.url, audio_file(0.5), steps=2).headers["X-UCR-Model-Version"] == "2"


def test_slow_uploads_get_408_within_their_timeouts():
    """A body that stalls or trickles is refused in bounded time (it held an ingress slot for as long as the sender
    liked), and a body that arrives in time still reaches the app."""
    import asyncio
    import time
    from types import SimpleNamespace

    from serve.app import UploadLimitMiddleware
    from serve.settings import HTTPSettings

    async def app(scope, receive, send):  # reads the whole body, then answers 200 with its length
        size = 0
        while True:
            event = await receive()
            size += len(event.get("body", b""))
            if not event.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    def call(chunks, gap_s):
        async def run():
            queue = list(chunks)
            sent = []

            async def receive():
                if not queue:
                    await asyncio.sleep(3600)  # a stalled sender
                await asyncio.sleep(gap_s)
                body = queue.pop(0)
                return {"type": "http.request", "body": body, "more_body": bool(queue) or body == b"partial"}

            async def send(message):
                sent.append(message)

            settings = HTTPSettings(api_key="k", body_idle_timeout_s=0.3, body_timeout_s=0.8)
            scope = {"type": "http", "path": "/separate", "method": "POST", "headers": [],
                     "app": SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(settings=settings)))}
            await UploadLimitMiddleware(app)(scope, receive, send)
            return sent
        started = time.monotonic()
        sent = asyncio.run(run())
        return sent[0]["status"], json.loads(sent[1]["body"]) if sent[0]["status"] != 200 else sent[1]["body"], \
            time.monotonic() - started

    status, body, took = call([b"partial"], gap_s=0.0)  # one chunk, then silence
    assert status == 408 and "stalled" in body["detail"] and took < 3, (status, body, took)
    status, body, took = call([b"x"] * 40, gap_s=0.1)  # each chunk in time, the whole too slow
    assert status == 408 and "not complete after 0.8 s" in body["detail"] and took < 3, (status, body, took)
    status, body, _ = call([b"ab", b"cd"], gap_s=0.05)
    assert (status, body) == (200, b"4")
    with pytest.raises(ValueError, match="body_idle_timeout_s"):
        HTTPSettings(api_key="k", body_idle_timeout_s=200.0, body_timeout_s=100.0)
    with pytest.raises(ValueError, match="body_timeout_s"):
        HTTPSettings(api_key="k", body_timeout_s=0)
