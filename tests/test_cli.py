import subprocess
import sys

import pytest

from ucr.cli import main

SUBCOMMANDS = [["demo"], ["config"], ["config", "show"], ["config", "presets"], ["codec"], ["codec", "roundtrip"],
               ["data"], ["data", "synth"], ["data", "encode"], ["train"], ["train-prior"], ["separate"],
               ["evaluate"], ["generate"], ["vary"], ["recompose"], ["run"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w))
def test_every_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as info:
        main(words + ["--help"])
    assert info.value.code == 0
    assert "usage: ucr" in capsys.readouterr().out


def test_codec_roundtrip_prints_sisdr_and_rtf(wav_file, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert main(["codec", "roundtrip", str(wav_file), "--codec", "mdct", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    sisdr = float(text.split("SI-SDR")[1].split("dB")[0])
    assert sisdr > 80  # MDCT is exact
    assert "encode RTF" in text and "decode RTF" in text
    assert out.exists()


def test_codec_roundtrip_encodec_random_weights(wav_file, capsys):
    assert main(["codec", "roundtrip", str(wav_file), "--codec", "encodec", "--weights", "random"]) == 0
    assert "encodec-sr24000" in capsys.readouterr().out


def test_bad_input_gives_exit_2_and_message(tmp_path, capsys):
    bogus = tmp_path / "bogus.wav"
    bogus.write_text("not audio")
    assert main(["codec", "roundtrip", str(bogus)]) == 2
    assert "bogus.wav" in capsys.readouterr().err
    assert main(["config", "show", "--set", "model.n_components=99"]) == 2
    assert "model.n_components" in capsys.readouterr().err


def test_installed_console_script():
    done = subprocess.run([sys.executable, "-m", "ucr.cli", "config", "show", "--flat", "--set",
                           "model.n_components=3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "model.n_components = 3" in done.stdout


def test_sweep_passes_its_arguments_to_tune_sweep(tmp_path):
    helped = subprocess.run([sys.executable, "-m", "ucr.cli", "sweep", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: ucr sweep") and "--space" in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "ucr.cli", "sweep", "--space", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert "no search space file" in missing.stderr and "demo.yaml" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: smoke\nparams:\n  prior.all_masked_prob: {type: uniform, low: 0.3, high: 0.7}\n")
    mixed = subprocess.run([sys.executable, "-m", "ucr.cli", "sweep", "--space", str(bad)], capture_output=True,
                           text=True, timeout=120)
    assert mixed.returncode == 1 and "stage: prior" in mixed.stderr
    conflicting = subprocess.run([sys.executable, "-m", "ucr.cli", "sweep", "--space", "tune/spaces/smoke.yaml",
                                  "--preset", "demo"], capture_output=True, text=True, timeout=120)
    assert conflicting.returncode == 1 and "the space file decides" in conflicting.stderr
