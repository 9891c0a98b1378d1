"""The registered model with stock MLflow tooling (pyfunc load, `mlflow models serve`), the promotion rule (beat
doing nothing and NMF, not only the last champion), and the registry references the rest of the project reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SR, write_slakh_track
from tests.listeners import describe, is_loopback, listening_sockets, process_tree

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A smoke-preset decomposer (K = 2) after a few steps: its final.pt."""
    from ucr.codec import MDCTCodec
    from ucr.config import load_config
    from ucr.data.latents import EncodeSettings, encode_split
    from ucr.train.tasks import build_decomposer_trainer

    root = tmp_path_factory.mktemp("registry_model")
    stems = {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3)}
    write_slakh_track(root / "slakh", "train", "Track00001", stems, seed=0)
    settings = EncodeSettings(data_root=str(root / "slakh"), layout="slakh", split="train", sources=("Drums", "Bass"),
                              mix="mean", sample_rate=SR, chunk_seconds=0.5, silence_rms=0.01, with_stems=True,
                              tracks_per_shard=2)
    encode_split(settings, MDCTCodec(), str(root / "cache"), progress=False)
    config = load_config("smoke", {"train.steps": 3, "train.checkpoint_every": 3})
    build_decomposer_trainer(config, str(root / "cache"), str(root / "run"), progress=False).fit()
    return str(root / "run" / "final.pt")


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


def register(checkpoint: str, out: Path, run_name: str) -> dict:
    from jobs import register as register_job

    args = register_job.parser().parse_args(["--preset", "smoke", "--out", str(out), "--model", checkpoint,
                                             "--run-name", run_name, "--experiment", "registry-test"])
    return register_job.run(args)


def clip(seconds: float = 0.5, rate: int = 16000) -> list[float]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)).astype(np.float32).tolist()


def test_below_passthrough_is_not_promoted_and_the_reason_is_recorded(tracking):
    """The first version has no champion to beat, but a negative SI-SDRi is worse than the mixture itself."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from jobs.evaluate import PROMOTION_TAG, promote

    client = MlflowClient(tracking)
    client.create_registered_model("ucr")
    for run_name in ("worse-than-nothing", "worse-than-nmf", "good"):
        client.create_model_version("ucr", "file:///nowhere", tags={"ucr.run_name": run_name},
                                    description="a model")

    done = promote("ucr", "champion", "worse-than-nothing", -0.87, bars={"mixture passthrough": 0.0})
    assert not done["promoted"]
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("ucr", "champion")
    version = client.get_model_version("ucr", "1")
    assert "does not beat mixture passthrough (+0.00 dB)" in version.tags[PROMOTION_TAG]
    assert "-0.87 dB" in version.tags[PROMOTION_TAG]
    assert version.description.startswith("a model\n\nPromotion: not promoted")

    done = promote("ucr", "champion", "worse-than-nmf", 0.5, bars={"nmf-32 clustered": 1.2})
    assert not done["promoted"] and "nmf-32 clustered (+1.20 dB)" in done["reason"]
    assert "mixture passthrough" not in done["reason"]  # only what it failed to beat

    done = promote("ucr", "champion", "good", 2.0, bars={"nmf-32 clustered": 1.2})
    assert done["promoted"]
    assert str(client.get_model_version_by_alias("ucr", "champion").version) == "3"
    assert "beats mixture passthrough (+0.00 dB), nmf-32 clustered (+1.20 dB)" in \
        client.get_model_version("ucr", "3").tags[PROMOTION_TAG]

    # the holder is a bar too; a rerun replaces the recorded reason rather than appending another
    client.create_model_version("ucr", "file:///nowhere", tags={"ucr.run_name": "not-better"})
    assert not promote("ucr", "champion", "not-better", 1.9)["promoted"]
    again = promote("ucr", "champion", "not-better", 1.9)
    assert "champion (version 3) (+2.00 dB)" in again["reason"]
    assert client.get_model_version("ucr", "4").description.count("Promotion:") == 1


def test_promotion_bars_from_a_validation_report():
    from jobs.evaluate import promotion_bars

    def row(method, value):
        return {"method": method, "source": "Drums", "reference": "original", "protocol": "windowed",
                "matching": "fixed", **{m: {"mean": value} for m in ("si_sdri", "si_sdr", "si_sir", "si_sar")}}

    report = {"sources": ["Drums"], "results": [row("ucr", 1.0), row("mixture passthrough", 0.0), row("nmf", 0.4),
                                                 row("nmf-32 clustered", 0.9)]}
    assert promotion_bars(report) == {"mixture passthrough": 0.0, "nmf-32 clustered": 0.9}


@pytest.mark.timeout(600)
def test_registered_version_is_a_pyfunc_model_that_mlflow_serves(tiny_checkpoint, tracking, tmp_path):
    import mlflow
    import requests
    from mlflow import MlflowClient

    from jobs.evaluate import promote
    from serve.source import resolve

    registered = register(tiny_checkpoint, tmp_path / "exp", "pyfunc-test")
    assert registered["version"] == 1
    assert promote("ucr", "champion", "pyfunc-test", 0.5)["promoted"]
    client = MlflowClient(tracking)
    version = client.get_model_version("ucr", "1")
    assert "2 components" in version.description and "Drums, Bass" in version.description
    info = mlflow.models.get_model_info("models:/ucr@champion")
    assert "python_function" in info.flavors and info.metadata["sources"] == ["Drums", "Bass"]
    assert [spec.name for spec in info.signature.inputs.inputs] == ["audio", "sample_rate"]
    assert {p.name: p.default for p in info.signature.params.params} == {"steps": 4, "mode": "independent",
                                                                          "seed": 0}  # the model's own defaults
    assert info.saved_input_example_info is not None

    # the rest of the project reads the same version as data (no code run): Serve's resolver, ucr.models
    source = resolve("models:/ucr@champion")
    try:
        assert source.version == "1" and source.checkpoint.endswith(os.path.join("artifacts", "checkpoint.pt"))
        assert source.card["sources"] == ["Drums", "Bass"]
    finally:
        source.cleanup()

    import pandas as pd

    model = mlflow.pyfunc.load_model("models:/ucr@champion")
    out = model.predict(pd.DataFrame({"audio": [clip()], "sample_rate": [16000]}), params={"steps": 2, "seed": 1})
    assert list(out["component"]) == [0, 1] and list(out["name"]) == ["component0", "component1"]
    assert set(out["sample_rate"]) == {SR} and all(len(a) == SR // 2 for a in out["audio"])

    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1",  # it execs `uvicorn` by name:
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # the venv's
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([MLFLOW, "models", "serve", "-m", "models:/ucr@champion", "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer within 180 s"
            time.sleep(1)
        found = listening_sockets(process_tree(server.pid))
        assert found and all(is_loopback(ip) for _, ip, _ in found), describe(found)
        body = {"dataframe_split": {"columns": ["audio", "sample_rate"], "data": [[clip(), 16000]]},
                "params": {"steps": 2, "seed": 1}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body),
                               headers={"Content-Type": "application/json"}, timeout=120)
        assert answer.status_code == 200, answer.text[:2000]
        predictions = answer.json()["predictions"]
        assert [p["component"] for p in predictions] == [0, 1]
        assert np.allclose(predictions[0]["audio"], out["audio"][0], atol=1e-4)  # the same model, the same seed
        wrong = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=60,
                              data=json.dumps({"dataframe_split": {"columns": ["wave"], "data": [[[0.0]]]}}),
                              headers={"Content-Type": "application/json"})
        assert wrong.status_code >= 400
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """End the server this test started (its own session: uvicorn's workers go with it)."""
    for sig, wait in ((15, 30), (9, 30)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
