import json

import numpy as np
import pytest

from tests.conftest import SR
from ucr.codec import MDCTCodec
from ucr.config import load_config
from ucr.data.latents import EncodeSettings, encode_split
from ucr.evaluate import EvalOptions, evaluate, markdown_table
from ucr.pipeline import Pipeline
from ucr.train.tasks import build_decomposer_trainer


def encode_train_and_test(slakh_root, tmp_path, codec, prefix: str = "cache") -> dict:
    """The train and test splits of ``slakh_root`` encoded with stems by ``codec``: ``{split: cache path}``."""
    caches = {}
    for split in ("train", "test"):
        caches[split] = str(tmp_path / f"{prefix}_{split}")
        settings = EncodeSettings(data_root=str(slakh_root), layout="slakh", split=split,
                                  sources=("Drums", "Bass"), mix="mean", sample_rate=SR, chunk_seconds=0.5,
                                  silence_rms=0.01, with_stems=True, tracks_per_shard=2)
        encode_split(settings, codec, caches[split], progress=False)
    return caches


@pytest.fixture
def trained(slakh_root, tmp_path):
    caches = encode_train_and_test(slakh_root, tmp_path, MDCTCodec())
    config = load_config("smoke")
    build_decomposer_trainer(config, caches["train"], str(tmp_path / "run"), progress=False).fit()
    build_decomposer_trainer(config, caches["train"], str(tmp_path / "sup"), supervised=True, progress=False).fit()
    return caches, str(tmp_path / "run"), str(tmp_path / "sup")


def test_report_has_every_method_reference_and_matching(trained, tmp_path):
    caches, run, sup = trained
    out = tmp_path / "report"
    report = evaluate(Pipeline.from_checkpoint(run), caches["test"], str(out),
                      EvalOptions(steps=2, nmf_iterations=20, window_seconds=0.25, hop_seconds=0.125,
                                  steps_curve=(1, 2), curve_chunks=2),
                      supervised=Pipeline.from_checkpoint(sup), log=lambda _: None)
    methods = {r["method"] for r in report["results"]}
    assert methods == {"ucr", "supervised reference", "mixture passthrough", "nmf", "nmf-32 clustered", "oracle IRM",
                       "codec ceiling"}
    assert {r["reference"] for r in report["results"]} == {"original", "codec"}
    assert {r["matching"] for r in report["results"] if r["method"] == "ucr"} == {"per-example", "fixed"}
    # closed-form anchors: passthrough improves nothing; the exact codec's ceiling is near perfect
    passthrough = [r for r in report["results"] if r["method"] == "mixture passthrough" and r["protocol"] == "whole"]
    assert all(abs(r["si_sdri"]["mean"]) < 1e-6 for r in passthrough)
    ceiling = [r for r in report["results"] if r["method"] == "codec ceiling" and r["protocol"] == "whole"]
    assert all(r["si_sdr"]["mean"] > 60 for r in ceiling)
    irm = [r for r in report["results"] if r["method"] == "oracle IRM" and r["protocol"] == "whole"
           and r["reference"] == "original"]
    assert all(r["si_sdri"]["mean"] > 3 for r in irm)
    # per-example matching can only be at least as good as the fixed one
    for protocol in ("whole",):
        for reference in ("original",):
            per, fixed = ([r["si_sdr"]["mean"] for r in report["results"] if r["method"] == "ucr"
                           and r["matching"] == m and r["protocol"] == protocol and r["reference"] == reference]
                          for m in ("per-example", "fixed"))
            assert np.mean(per) >= np.mean(fixed) - 1e-9
    assert len(report["steps_curve"]) == 2 and report["peak_memory_mb"] > 0
    assert set(report["steps_curve"][0]["si_sdri"]) == {"Drums", "Bass"}
    assert all(np.isfinite(v) for v in report["steps_curve"][0]["si_sdri"].values())
    saved = json.loads((out / "report.json").read_text())
    assert saved["n_chunks"] == report["n_chunks"] == 4
    text = (out / "report.md").read_text()
    assert "| ucr |" in text and "| nmf |" in text and "Codec-reconstructed" in text
    assert (out / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "audio" / "example0" / "component1.wav").exists()
    assert "SI-SDRI Drums" in markdown_table(report)
    # per-window records: the windowed fixed-matching mean of each source is their mean, each names its track
    windows = report["windows"]["rows"]
    for source in ("Drums", "Bass"):
        summary = [r for r in report["results"] if r["method"] == "ucr" and r["matching"] == "fixed"
                   and r["protocol"] == "windowed" and r["reference"] == "original" and r["source"] == source][0]
        values = [w["si_sdri"] for w in windows if w["source"] == source]
        assert len(values) == summary["si_sdri"]["n"]
        assert np.mean(values) == pytest.approx(summary["si_sdri"]["mean"])
    assert all(w["track"] and 0 <= w["start_s"] < 0.5 for w in windows)
    assert "## Per window: ucr, fixed matching, original stems" in text and "lowest windows" in text
    # the alignment check: by default half a hop + 1 samples; the aligned score is the report's own on those chunks
    check = report["alignment_check"]
    assert check["delay_samples"] == MDCTCodec().hop_length // 2 + 1 and check["chunks"] == 2
    assert set(check["delayed"]) == {"Drums", "Bass"} and all(np.isfinite(v) for v in check["delayed"].values())
    assert set(check["aligned"]) == {"Drums", "Bass"} and all(np.isfinite(v) for v in check["aligned"].values())
    assert "## Alignment check: the inputs delayed by 161 samples" in text


def test_cache_without_stems_is_refused(trained, slakh_root, tmp_path):
    caches, run, _ = trained
    plain = str(tmp_path / "plain")
    settings = EncodeSettings(data_root=str(slakh_root), layout="slakh", split="test", sources=("Drums", "Bass"),
                              mix="mean", sample_rate=SR, chunk_seconds=0.5, silence_rms=0.01, with_stems=False,
                              tracks_per_shard=2)
    encode_split(settings, MDCTCodec(), plain, progress=False)
    with pytest.raises(ValueError, match="with-stems"):
        evaluate(Pipeline.from_checkpoint(run), plain, str(tmp_path / "r"), log=lambda _: None)
    from ucr.codec.stft import STFTPhaseCodec  # a cache of another codec is refused, naming both

    other = str(tmp_path / "other_codec")
    encode_split(EncodeSettings(**{**settings.__dict__, "with_stems": True}), STFTPhaseCodec(), other, progress=False)
    with pytest.raises(ValueError, match=r"holds latents of codec stftif-.*but the model works in mdct"):
        evaluate(Pipeline.from_checkpoint(run), other, str(tmp_path / "r2"), log=lambda _: None)


def test_one_pass_residual_report_has_diagnostics_and_alpha_curve(trained, tmp_path):
    caches, run, _ = trained
    out = tmp_path / "report_one_pass"
    report = evaluate(Pipeline.from_checkpoint(run), caches["test"], str(out),
                      EvalOptions(mode="one_pass_residual", nmf=False, irm=False, window_seconds=0.25,
                                  hop_seconds=0.125, alpha_curve=(0.2, 0.5), curve_chunks=2, alignment_delay=0),
                      log=lambda _: None)
    assert "alignment_check" not in report  # 0 turns the check off
    assert report["separation_settings"] == {"mode": "one_pass_residual", "alpha": 0.3, "draws": 4,
                                             "post_filter": "none", "residual_gain": "least_squares",
                                             "mask_power": 1.0, "shifts": 1}
    d = report["diagnostics"]
    matrix = np.array(d["component_x_source"])
    assert matrix.shape == (2, 2) and np.isfinite(matrix).all()
    r = np.array(d["z_correlation"])
    assert r.shape == (2, 2) and np.allclose(np.diag(r), 1.0) and np.allclose(r, r.T)
    assert [(p["alpha"], p["mode"]) for p in report["alpha_curve"]] == [
        (0.2, "one_pass"), (0.2, "one_pass_residual"), (0.5, "one_pass"), (0.5, "one_pass_residual")]
    text = (out / "report.md").read_text()
    assert "Decomposition diagnostics" in text and "One-pass alpha*" in text and "| 0.2 | one_pass |" in text


def test_wiener_post_filter_reaches_separate_and_evaluate(trained, tmp_path):
    caches, run, _ = trained
    pipeline = Pipeline.from_checkpoint(run)
    t = np.arange(SR) / SR
    wave = (0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sign(np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    raw = pipeline.separate(wave, SR, mode="one_pass", post_filter="none").components
    filtered = pipeline.separate(wave, SR, mode="one_pass", post_filter="wiener").components
    assert filtered.shape == raw.shape == (2, len(wave))
    # one_pass alone does not compose exactly; after the filter the components average to the input mixture
    assert np.abs(raw.mean(0) - wave).max() > 1e-3
    np.testing.assert_allclose(filtered.mean(0), wave, atol=1e-4)
    report = evaluate(pipeline, caches["test"], str(tmp_path / "wiener"),
                      EvalOptions(mode="one_pass", post_filter="wiener", nmf=False, irm=False, window_seconds=0.25,
                                  hop_seconds=0.125), log=lambda _: None)
    assert report["separation_settings"]["post_filter"] == "wiener"
    with pytest.raises(ValueError, match="diffusion.post_filter"):
        load_config("smoke", {"diffusion.post_filter": "median"})


def test_a_magnitude_latent_separates_through_the_mixtures_phase(slakh_root, tmp_path):
    """In ``stft_mag`` the separated components are masks on the mixture's STFT everywhere a separation is decoded:
    the pipeline's components sum to the input, and the report's codec ceiling is the oracle magnitude mask (a
    Griffin-Lim phase per stem would score far below it)."""
    from ucr.codec.stft import STFTMagnitudeCodec

    caches = encode_train_and_test(slakh_root, tmp_path, STFTMagnitudeCodec(), prefix="mag")
    build_decomposer_trainer(load_config("smoke", {"codec.name": "stft_mag"}), caches["train"],
                             str(tmp_path / "run"), progress=False).fit()
    pipeline = Pipeline.from_checkpoint(str(tmp_path / "run"))
    wave = np.random.default_rng(0).normal(0, 0.1, 5000).astype(np.float32)
    for mode in ("one_pass_residual", "independent"):
        components = pipeline.separate(wave, SR, steps=2, mode=mode).components  # [K, L]
        assert components.shape == (2, 5000)
        np.testing.assert_allclose(components.sum(0), wave, atol=1e-5)
    shifted = pipeline.separate(wave, SR, shifts=2).components  # the shift trick keeps the sum and changes the split
    np.testing.assert_allclose(shifted.sum(0), wave, atol=1e-5)
    assert np.abs(shifted - pipeline.separate(wave, SR).components).max() > 1e-4
    # alpha= is the one-pass blend level: the same as the model's config saying it, and not the default's result
    import dataclasses

    lifted = pipeline.separate(wave, SR, mode="one_pass", alpha=0.6).components
    default_alpha = pipeline.config.diffusion.one_pass_alpha
    pipeline.config = dataclasses.replace(pipeline.config, diffusion=dataclasses.replace(
        pipeline.config.diffusion, one_pass_alpha=0.6))
    np.testing.assert_array_equal(lifted, pipeline.separate(wave, SR, mode="one_pass").components)
    pipeline.config = dataclasses.replace(pipeline.config, diffusion=dataclasses.replace(
        pipeline.config.diffusion, one_pass_alpha=default_alpha))
    assert np.abs(lifted - pipeline.separate(wave, SR, mode="one_pass").components).max() > 1e-4
    with pytest.raises(ValueError, match="alpha must be in"):
        pipeline.separate(wave, SR, mode="one_pass", alpha=1.5)
    report = evaluate(pipeline, caches["test"], str(tmp_path / "report"),
                      EvalOptions(mode="one_pass", nmf=False, irm=False, window_seconds=0.25, hop_seconds=0.125,
                                  alignment_delay=0), log=lambda _: None)
    ceiling = [row["si_sdr"]["mean"] for row in report["results"] if row["method"] == "codec ceiling"
               and row["reference"] == "original" and row["protocol"] == "whole"]
    assert len(ceiling) == 2 and min(ceiling) > 5.0, ceiling
    # the evaluation's shift trick: the mean of the separations of the mixture delayed by 0 and hop / 2 samples
    import torch

    from ucr.data.latents import LatentCache
    from ucr.evaluate import _separate_chunks

    report = evaluate(pipeline, caches["test"], str(tmp_path / "report2"),
                      EvalOptions(mode="one_pass", nmf=False, irm=False, window_seconds=0.25, hop_seconds=0.125,
                                  alignment_delay=0, max_chunks=1, shifts=2, audio_examples=1), log=lambda _: None)
    assert report["separation_settings"]["shifts"] == 2
    item, codec = LatentCache(caches["test"]).item(0), pipeline.codec
    mixture = item["mixture_wave"][None]  # [1, L]
    L = mixture.shape[-1]
    padded = torch.nn.functional.pad(mixture, (0, -L % codec.hop_length))
    runs = []
    for offset in (0, codec.hop_length // 2):
        delayed = torch.roll(padded, offset, dims=-1)
        waves, _ = _separate_chunks(pipeline.model, codec, codec.encode(delayed[:, None]), 1, 0, 8,
                                    delayed.shape[-1], "one_pass", 0.3, 4, mixtures=delayed.numpy())
        runs.append(np.roll(waves[0], -offset, axis=-1)[:, :L])
    waves, _ = _separate_chunks(pipeline.model, codec, item["mixture"][None], 1, 0, 8, L, "one_pass", 0.3, 4,
                                mixtures=mixture.numpy(), shifts=2)
    np.testing.assert_allclose(waves[0], (runs[0] + runs[1]) / 2, atol=1e-6)
    assert np.abs(waves[0] - runs[0]).max() > 1e-4
