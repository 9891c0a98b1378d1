"""`ucr separate` as a Demucs user meets it: no flag needed, labelled files under separated/, every output format,
the model references of the registry, one sentence when there is no model; and the help of the commands."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import SR, write_slakh_track
from ucr.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A smoke-preset decomposer (K = 2) trained for a few steps on two Slakh-layout tracks: its run folder."""
    from ucr.codec import MDCTCodec
    from ucr.config import load_config
    from ucr.data.latents import EncodeSettings, encode_split
    from ucr.train.tasks import build_decomposer_trainer

    root = tmp_path_factory.mktemp("tiny_model")
    stems = {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3)}
    for i in range(2):
        write_slakh_track(root / "slakh", "train", f"Track{i + 1:05d}", stems, seed=i)
    settings = EncodeSettings(data_root=str(root / "slakh"), layout="slakh", split="train", sources=("Drums", "Bass"),
                              mix="mean", sample_rate=SR, chunk_seconds=0.5, silence_rms=0.01, with_stems=True,
                              tracks_per_shard=2)
    encode_split(settings, MDCTCodec(), str(root / "cache"), progress=False)
    build_decomposer_trainer(load_config("smoke"), str(root / "cache"), str(root / "run"), progress=False).fit()
    return str(root / "run")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory with no model configured anywhere (a home of its own, so no ~/.ucr registry),
    and the common umask."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("UCR_MODEL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    previous = os.umask(0o022)
    yield tmp_path
    os.umask(previous)


def write_song(path, rate: int = 44100, channels: int = 2, seconds: float = 1.5, gain: float = 1.0) -> np.ndarray:
    """Tones (a different one per channel) written as 16-bit WAV; returns what reads back, ``[L, channels]``."""
    t = np.arange(int(rate * seconds)) / rate
    wave = gain * np.stack([0.4 * np.sin(2 * np.pi * 110 * (c + 1) * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
                            for c in range(channels)], axis=1)
    sf.write(str(path), wave, rate, subtype="PCM_16")
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


def make_demo_out(tiny_model: str, sources=None) -> str:
    """``demo_out/decomposer/final.pt`` as `make demo` leaves it (with the evaluate stage's component names)."""
    from ucr.evaluate import store_component_sources

    target = os.path.join("demo_out", "decomposer", "final.pt")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(os.path.join(tiny_model, "final.pt"), target)
    if sources is not None:
        store_component_sources(target, sources)
    return target


def downmix_snr_db(components: np.ndarray, mixture: np.ndarray) -> float:
    """How closely the mean of the components ``[K, L]`` (one channel each) is the mono mixture ``[L]`` (dB)."""
    error = components.mean(axis=0) - mixture
    return float(10 * np.log10(np.sum(mixture ** 2) / max(np.sum(error ** 2), 1e-20)))


# ------------------------------------------------------------------------------------------------ finding a model
def test_separate_with_no_flag_uses_the_demo_model_and_names_files_by_source(tiny_model, workdir, capsys):
    make_demo_out(tiny_model, sources=["Bass", "Drums"])
    song = write_song(workdir / "song.wav")
    assert main(["separate", "song.wav"]) == 0
    captured = capsys.readouterr()
    assert "the last `make demo` model" in captured.out
    assert "window" in captured.err  # the progress bar, on stderr
    folder = workdir / "separated" / "demo_out" / "song"
    assert sorted(p.name for p in folder.iterdir()) == ["Bass.wav", "Drums.wav"]
    waves = []
    for path in sorted(folder.iterdir()):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, len(song))  # the input's rate, channels
        assert (info.format, info.subtype) == ("WAV", "FLOAT")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        wave = sf.read(str(path), dtype="float32", always_2d=True)[0]
        assert np.array_equal(wave[:, 0], wave[:, 1])  # the mono model's component on every channel
        waves.append(wave[:, 0])
    assert not np.allclose(waves[0], waves[1])


def test_ucr_model_variable_and_the_demo_folder_as_model(tiny_model, workdir, monkeypatch):
    write_song(workdir / "song.wav", rate=24000, channels=1)
    monkeypatch.setenv("UCR_MODEL", tiny_model)  # a run folder, no component names stored: componentK
    assert main(["separate", "song.wav", "--quiet"]) == 0
    folder = workdir / "separated" / "run" / "song"
    assert sorted(p.name for p in folder.iterdir()) == ["component0.wav", "component1.wav"]
    make_demo_out(tiny_model, sources=["Drums", "Bass"])
    assert main(["separate", "song.wav", "--model", "demo_out", "-o", "out", "--quiet"]) == 0  # flag over $UCR_MODEL
    assert sorted(p.name for p in (workdir / "out" / "demo_out" / "song").iterdir()) == ["Bass.wav", "Drums.wav"]


def test_no_model_anywhere_gets_one_sentence_on_how_to_get_one(workdir, capsys):
    write_song(workdir / "song.wav")
    assert main(["separate", "song.wav"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "make demo" in err and "UCR_MODEL" in err and "--model" in err and "models:/ucr@champion" in err
    assert not (workdir / "separated").exists()


def test_alpha_flag_sets_the_one_pass_blend_level_and_bad_values_are_refused(tiny_model, workdir, capsys):
    write_song(workdir / "song.wav", rate=24000, channels=1)
    base = ["separate", "song.wav", "-n", tiny_model, "--mode", "one_pass", "--quiet"]
    assert main(base + ["-o", "default"]) == 0
    assert main(base + ["-o", "lifted", "--alpha", "0.7"]) == 0
    read = lambda folder: sf.read(str(workdir / folder / "run" / "song" / "component0.wav"))[0]
    assert np.abs(read("lifted") - read("default")).max() > 1e-4  # the flag reached the decoder's input
    assert main(base + ["-o", "bad", "--alpha", "1.5"]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert not (workdir / "bad" / "run" / "song").exists()


def test_a_folder_without_a_model_is_refused_clearly(workdir, capsys):
    write_song(workdir / "song.wav")
    (workdir / "empty").mkdir()
    assert main(["separate", "song.wav", "-n", "empty"]) == 2
    assert "empty holds no model" in capsys.readouterr().err


def test_registry_references_and_the_champion(tiny_model, workdir, monkeypatch, capsys):
    import mlflow
    from mlflow import MlflowClient

    from jobs.evaluate import promote  # what the evaluate stage does after scoring validation
    from ucr.models import COMPONENT_SOURCES_TAG

    registry = workdir / "home" / ".ucr"  # the jobs' default local store (HOME is the workdir's home)
    (registry / "artifacts").mkdir(parents=True)
    tracking = f"sqlite:///{registry / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    shutil.copy(os.path.join(tiny_model, "final.pt"), registry / "artifacts" / "checkpoint.pt")  # the register job's
    experiment = mlflow.create_experiment("cli-test", artifact_location=(registry / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(registry / "artifacts"), artifact_path="model")
    client = MlflowClient(tracking)
    client.create_registered_model("ucr")
    version = client.create_model_version("ucr", f"runs:/{run.info.run_id}/model", run.info.run_id,
                                          tags={"ucr.run_name": "cli-test"})
    assert promote("ucr", "champion", "cli-test", 1.0, ["Drums", "Bass"])["promoted"]
    assert client.get_model_version("ucr", version.version).tags[COMPONENT_SOURCES_TAG] == '["Drums", "Bass"]'
    from serve.source import resolve as resolve_source  # what Serve's model card shows of this version

    card = resolve_source("models:/ucr@champion", workdir=str(workdir / "card")).card
    assert card["validation_si_sdri_db"] == "1.000000" and card["promotion"].startswith("promoted to 'champion'")
    write_song(workdir / "song.wav")
    make_demo_out(tiny_model)  # the registry comes first in the search order
    capsys.readouterr()

    assert main(["separate", "song.wav", "-n", "models:/ucr@champion", "--quiet"]) == 0
    assert sorted(p.name for p in (workdir / "separated" / "ucr-v1" / "song").iterdir()) == ["Bass.wav", "Drums.wav"]
    assert main(["separate", "song.wav", "-o", "by_default", "--quiet"]) == 0  # no flag: the champion
    assert "the registry models:/ucr@champion (version 1)" in capsys.readouterr().out
    assert (workdir / "by_default" / "ucr-v1" / "song" / "Drums.wav").exists()
    assert main(["separate", "song.wav", "-n", "models:/ucr/1", "-o", "pinned", "--quiet"]) == 0
    assert (workdir / "pinned" / "ucr-v1" / "song" / "Bass.wav").exists()
    assert main(["separate", "song.wav", "-n", "models:/ucr@staging", "--quiet"]) == 2
    assert "no version of registered model 'ucr' has alias 'staging'" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # no variable: the default local store ~/.ucr/mlflow.db is searched
    assert main(["separate", "song.wav", "-o", "default_store", "--quiet"]) == 0
    assert "the registry models:/ucr@champion (version 1)" in capsys.readouterr().out
    assert (workdir / "default_store" / "ucr-v1" / "song" / "Drums.wav").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a registry that does not answer: say so, go on
    assert main(["separate", "song.wav", "-o", "fallback", "--quiet"]) == 0
    assert "looking further" in capsys.readouterr().err
    assert (workdir / "fallback" / "demo_out" / "song" / "component0.wav").exists()


def test_evaluate_label_components_names_the_outputs(tiny_model, workdir, capsys):
    """`ucr evaluate --label-components` stores the fixed matching in the checkpoint; separate then uses it."""
    from ucr.pipeline import Pipeline

    shutil.copytree(tiny_model, "mine")
    cache = os.path.join(os.path.dirname(tiny_model), "cache")  # encoded with stems (stands in for validation)
    assert main(["evaluate", "--model", "mine", "--data", cache, "--split", "validation", "--out", "report",
                 "--steps", "1", "--max-chunks", "4", "--no-nmf", "--label-components"]) == 0
    captured = capsys.readouterr()
    assert "chunk" in captured.err  # the per-chunk progress bar
    names = Pipeline.from_checkpoint("mine").component_names
    assert {name.split("_")[0] for name in names} <= {"Drums", "Bass", "component0", "component1"}
    assert any(name.startswith(("Drums", "Bass")) for name in names)
    write_song(workdir / "song.wav")
    assert main(["separate", "song.wav", "-n", "mine", "--quiet"]) == 0
    assert sorted(p.stem for p in (workdir / "separated" / "mine" / "song").iterdir()) == sorted(names)


# ------------------------------------------------------------------------------------------------ output formats
MP3 = "MPEG_LAYER_III" in sf.available_subtypes("MP3")


@pytest.mark.parametrize("flags, format, subtype, in_rate, rate, channels", [
    ([], "WAV", "FLOAT", 44100, 44100, 2),
    (["--float32"], "WAV", "FLOAT", 44100, 44100, 1),
    (["--int16"], "WAV", "PCM_16", 24000, 24000, 2),
    (["--int24"], "WAV", "PCM_24", 24000, 24000, 2),
    (["--flac"], "FLAC", "PCM_24", 24000, 24000, 2),
    (["--flac", "--int16"], "FLAC", "PCM_16", 24000, 24000, 1),
    (["--flac", "--sr", "22050"], "FLAC", "PCM_24", 24000, 22050, 2),
    (["--sr", "48000"], "WAV", "FLOAT", 24000, 48000, 1),
    pytest.param(["--mp3"], "MP3", "MPEG_LAYER_III", 44100, 44100, 2,
                 marks=pytest.mark.skipif(not MP3, reason="this libsndfile cannot encode MP3")),
    pytest.param(["--mp3", "--sr", "24000"], "MP3", "MPEG_LAYER_III", 44100, 24000, 1,
                 marks=pytest.mark.skipif(not MP3, reason="this libsndfile cannot encode MP3")),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_output_format_round_trips(tiny_model, workdir, capsys, flags, format, subtype, in_rate, rate,
                                         channels):
    from ucr import audio

    # The components of this barely trained model peak near 0.8 whatever the input; the integer formats are fed
    # audio at the model's rate, since upsampling them would overshoot full scale (and clip: the CLI says so).
    song = write_song(workdir / "song.wav", rate=in_rate, channels=channels, gain=0.02)  # [L, channels]
    # one_pass_residual: the components' mean is the mixture exactly (exact codec), a property to check them by
    assert main(["separate", "song.wav", "-n", tiny_model, "--mode", "one_pass_residual", "--quiet", *flags]) == 0
    folder = workdir / "separated" / "run" / "song"
    extension = format.lower()
    assert sorted(p.name for p in folder.iterdir()) == [f"component0.{extension}", f"component1.{extension}"]
    components = []
    for path in sorted(folder.iterdir()):
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == (format, subtype, rate, channels)
        assert info.frames == round(len(song) * rate / in_rate)  # the input's duration
        components.append(sf.read(str(path), dtype="float32", always_2d=True)[0][:, 0])
    if format != "MP3":  # lossless: the components recompose the (mono, resampled) input
        assert "clipped" not in capsys.readouterr().err
        mono = audio.resample(song.mean(axis=1)[None], in_rate, rate)[0]
        assert downmix_snr_db(np.stack(components), mono) > 25


@pytest.mark.parametrize("flags, message", [
    (["--flac", "--float32"], "FLAC cannot store float32 samples"),
    (["--mp3", "--int24"], "MP3 cannot store int24 samples"),
    (["--mp3", "--sr", "96000"], "--mp3 cannot store 96000 Hz"),
    (["--flac", "--mp3"], None),  # argparse: not allowed with
])
def test_impossible_formats_are_refused_before_any_work(workdir, capsys, flags, message):
    write_song(workdir / "song.wav")
    if message is None:
        with pytest.raises(SystemExit) as info:
            main(["separate", "song.wav", *flags])
        assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err
        return
    assert main(["separate", "song.wav", *flags]) == 2  # fails before looking for a model (there is none here)
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the Python API
def test_pipeline_from_pretrained_separates_a_path(tiny_model, workdir):
    from ucr.pipeline import Pipeline

    make_demo_out(tiny_model, sources=["Drums", None])
    write_song(workdir / "song.wav")
    pipeline = Pipeline.from_pretrained("demo_out", device="cpu")
    result = pipeline.separate("song.wav")
    assert result.names == ("Drums", "component1")
    assert result.components.shape == (2, round(1.5 * pipeline.sample_rate)) and result.sample_rate == SR
    with pytest.raises(ValueError, match="sample rate"):
        pipeline.separate(np.zeros((1, 4800), np.float32))


@pytest.mark.parametrize("mode", ["independent", "mixture_consistent", "one_pass", "one_pass_residual"])
def test_windowed_separation_with_progress_equals_separate_many(tiny_model, mode):
    """Reporting progress changes nothing in what Decomposer.separate_many gives, for every mode."""
    from ucr.pipeline import Pipeline

    model = Pipeline.from_checkpoint(tiny_model).model
    latents = torch.randn(5, 320, 16)  # [N, C, T]: five windows, batches of two
    expected = model.separate_many(latents, 2, steps=3, generator=torch.Generator().manual_seed(0), mode=mode)
    seen = []
    got = model.separate_many(latents, 2, 3, torch.Generator().manual_seed(0), mode, 0.3, 4,
                              on_progress=seen.append)
    torch.testing.assert_close(got, expected)
    assert seen == sorted(seen) and seen[-1] == 5
    if mode in ("independent", "mixture_consistent"):  # the sampler moves the bar within a batch
        assert any(value != int(value) for value in seen)


# ------------------------------------------------------------------------------------------------ help and synth
def test_help_says_the_defaults(capsys):
    for words in (["separate"], ["evaluate"], ["generate"], ["vary"], ["recompose"]):
        with pytest.raises(SystemExit):
            main(words + ["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "auto (the default: CUDA when present" in text, words
    for words in (["train"], ["train-prior"]):
        with pytest.raises(SystemExit):
            main(words + ["--help"])
        assert "train.device: auto by default (CUDA when present" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["recompose", "--help"])
    assert "no prior needed" in " ".join(capsys.readouterr().out.split())


def test_job_help_shows_the_command_typed_and_keeps_the_examples():
    done = subprocess.run([sys.executable, "-m", "ucr.cli", "run", "pipeline", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ucr run pipeline")
    assert "\n    python -m jobs.pipeline --preset demo --out runs/demo" in done.stdout  # not reflowed
    direct = subprocess.run([sys.executable, "-m", "jobs.register", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert direct.returncode == 0 and direct.stdout.startswith("usage: python -m jobs.register")


def test_synth_says_when_a_split_is_empty(workdir, capsys):
    assert main(["data", "synth", "--tracks", "2", "--seconds", "1", "--out", "two", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "train 2, validation 0, test 0" in captured.out
    assert "no track in the validation and test split(s)" in captured.err and "--tracks 3" in captured.err
    assert main(["data", "synth", "--tracks", "3", "--seconds", "1", "--out", "three", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "train 1, validation 1, test 1" in captured.out and "no track" not in captured.err


# ------------------------------------------------------------------------------------------------ the README
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks of ``language``."""
    text = open(README, encoding="utf-8").read()
    return [part.split("\n```", 1)[0] for part in text.split(f"```{language}\n")[1:]]


def readme_commands() -> list[str]:
    """Every `ucr` command of the README's shell blocks, continuation lines joined, comments dropped."""
    import shlex

    commands = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.split(" ", 1)[0] in ("ucr", ".venv/bin/ucr"):
                words = shlex.split(line, comments=True)
                commands.append(" ".join(shlex.quote(w) for w in words[1:]))
    return commands


def test_every_readme_ucr_command_parses():
    """Flags that do not exist, or a missing argument, fail here (argparse exits 2)."""
    import importlib
    import shlex

    from ucr.cli import build_parser

    commands = readme_commands()
    assert any(c.startswith("separate ") for c in commands) and any(c == "demo" for c in commands)
    parser = build_parser()
    for command in commands:
        words = shlex.split(command)
        if words[0] == "sweep":  # handed whole to tune.sweep (its own parser; test_cli runs it)
            continue
        parser.parse_args(words)
        if words[0] == "run":  # ucr hands the rest to `python -m jobs.STAGE`: its own parser must take it
            importlib.import_module(f"jobs.{words[1]}").parser().parse_args(words[2:])


def test_readme_separation_commands_and_python_api_run_as_written(tiny_model, workdir, capsys):
    """The README's `ucr separate` lines and its Python API block, on the files they name (a tiny model stands in
    for the trained ones; registry lines are covered by test_registry_references_and_the_champion)."""
    import shlex

    make_demo_out(tiny_model, sources=["Drums", "Bass"])  # as jobs.evaluate leaves the demo's model
    track = workdir / "demo_out" / "data" / "test" / "Track00080"
    track.mkdir(parents=True)
    sf.write(str(track / "mix.flac"), write_song(workdir / "mix.wav", rate=SR, channels=1), SR, subtype="PCM_24")
    write_song(workdir / "song.wav")
    os.makedirs("runs")
    shutil.copytree(tiny_model, "runs/cpu60")
    ran = 0
    for command in readme_commands():
        if command.startswith("separate ") and "models:/" not in command:
            assert main(shlex.split(command)) == 0, command
            ran += 1
    assert ran == 3
    assert sorted(p.name for p in (workdir / "separated" / "demo_out" / "Track00080").iterdir()) == [
        "Bass.wav", "Drums.wav"]
    assert (workdir / "separated" / "demo_out" / "song" / "Drums.wav").exists()
    assert (workdir / "separated" / "cpu60" / "song" / "component0.flac").exists()
    (api,) = [block for block in readme_blocks("python") if "from_pretrained" in block]
    capsys.readouterr()
    exec(compile(api, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["Drums", "Bass"]


# ------------------------------------------------------------------------------------------------ batched separation
def test_separate_batch_shares_batches_and_gives_each_input_what_it_gets_alone(tiny_model):
    """Inputs of several lengths and seeds in one call: each result equals that input separated alone (its own
    noise, its own blind residual choice), in the one-pass modes and in a sampler mode."""
    from ucr.pipeline import Pipeline

    pipeline = Pipeline.from_checkpoint(tiny_model)
    rng = np.random.default_rng(0)
    inputs = [(0.2 * rng.standard_normal(int(SR * seconds)).astype(np.float32), SR) for seconds in (3.0, 0.4, 3.0)]
    inputs.append((0.2 * rng.standard_normal((2, 20000)).astype(np.float32), 16000))  # stereo, another rate
    seeds = [5, 7, 9, 5]
    for mode in ("one_pass_residual", "one_pass", "mixture_consistent"):
        together = pipeline.separate_batch(inputs, seeds, steps=2, mode=mode)
        for (wave, rate), seed, got in zip(inputs, seeds, together):
            alone = pipeline.separate(wave, rate, steps=2, seed=seed, mode=mode)
            assert got.components.shape == alone.components.shape
            np.testing.assert_allclose(got.components, alone.components, atol=1e-5, rtol=0)
    first, third = pipeline.separate_batch(inputs[:1] + inputs[2:3], [5, 6], steps=2, mode="one_pass")
    assert not np.allclose(first.components, third.components)  # other noise, not a copy
    with pytest.raises(ValueError, match="2 inputs but 1 seeds"):
        pipeline.separate_latents([torch.zeros(320, 10)] * 2, [0])


def test_serve_batch_of_jobs_one_refused_the_others_answered(tiny_model):
    """The Serve model's batch: jobs that share settings run together; a bad input or component gets its own error
    while the others still get their separation."""
    from serve.model import Failure, LoadedModel, _separate_jobs
    from serve.source import ModelSource
    from ucr.pipeline import Pipeline

    pipeline = Pipeline.from_checkpoint(tiny_model)
    loaded = LoadedModel(pipeline, ModelSource(reference=tiny_model, checkpoint=tiny_model, name="tiny"), 0.0)
    wave = 0.2 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    job = {"wave": wave, "sample_rate": SR, "steps": None, "seed": 3, "mode": "one_pass", "component": None}
    jobs = [job, {**job, "seed": 4}, {**job, "wave": np.zeros(SR, np.float32)}, {**job, "component": 9}]
    results = _separate_jobs(loaded, jobs)
    assert [isinstance(r, Failure) for r in results] == [False, False, True, True]
    assert results[2]["status"] == 400 and "silent" in results[2]["detail"]  # unusable audio: 400, as over HTTP
    assert results[3]["status"] == 422 and "component=9" in results[3]["detail"]
    alone = pipeline.separate(wave, SR, seed=3, mode="one_pass")
    np.testing.assert_allclose(results[0]["components"], alone.components, atol=1e-5, rtol=0)
    assert results[1]["seed"] == 4 and results[0]["mode"] == "one_pass" and results[0]["indices"] == [0, 1]
