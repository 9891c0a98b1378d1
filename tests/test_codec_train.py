"""`ucr codec train`: a codec trained here loads through codec.weights, resumes exactly, and learns."""

from __future__ import annotations

import pytest
import torch

from ucr import checkpoint as ckpt
from ucr.codec import build_codec
from ucr.codec import train as codec_train
from ucr.config import load_config

TINY = {"codec.train_filters": 4, "codec.train_latent_channels": 8, "codec.train_segment_seconds": 0.25,
        "train.batch_size": 2, "train.log_every": 1}


def tiny(**overrides):
    return load_config("smoke", {**TINY, **overrides})


def weights(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_codec_trained_here_loads_through_codec_weights_with_the_same_latents(slakh_root, tmp_path):
    trainer = codec_train.build_codec_trainer(tiny(**{"train.steps": 2}), str(slakh_root), str(tmp_path / "run"),
                                              progress=False)
    trainer.fit()
    folder = codec_train.export_pretrained(str(tmp_path / "run" / "final.pt"), str(tmp_path / "run" / "encodec"))
    codec = build_codec(tiny(**{"codec.name": "encodec", "codec.weights": folder,
                                "codec.latent_kind": "continuous"}).codec)
    assert (codec.channels, codec.sample_rate, codec.hop_length) == (8, 24000, 320)
    wave = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(0)) * 0.1
    trained = trainer.eval_model().eval()
    assert trained.input_gain == tiny().codec.train_input_gain != 1  # exported with the gain folded in
    with torch.no_grad():
        torch.testing.assert_close(codec.encode(wave), trained.encode(wave), rtol=1e-5, atol=1e-6)
        latent = trained.encode(wave)
        torch.testing.assert_close(codec.decode(latent)[..., :24000], trained.decode(latent, 24000), rtol=1e-5,
                                   atol=1e-7)
    with pytest.raises(ValueError, match="not a codec one"):
        codec_train.export_pretrained(str(_decomposer_checkpoint(tmp_path)), str(tmp_path / "x"))


def _decomposer_checkpoint(tmp_path):
    path = tmp_path / "decomposer.pt"
    ckpt.save(str(path), {"kind": "decomposer", "config": {}, "model": {}, "codec": {}})
    return path


def test_codec_training_resumes_exactly(slakh_root, tmp_path):
    straight = codec_train.build_codec_trainer(tiny(**{"train.steps": 4}), str(slakh_root), str(tmp_path / "a"),
                                               progress=False)
    straight.fit()
    halfway = codec_train.build_codec_trainer(tiny(**{"train.steps": 2}), str(slakh_root), str(tmp_path / "b"),
                                              progress=False)
    halfway.fit()
    resumed = codec_train.build_codec_trainer(tiny(**{"train.steps": 4}), str(slakh_root), str(tmp_path / "b"),
                                              progress=False)
    assert resumed.resume_if_possible() and resumed.step == 2
    resumed.fit(resume=False)
    for name, value in weights(straight.module).items():
        torch.testing.assert_close(weights(resumed.module)[name], value, rtol=0, atol=0)
    assert ckpt.load(str(tmp_path / "b"))["kind"] == "codec"


def test_folding_the_input_gain_keeps_the_reconstruction_at_the_audio_level():
    from transformers import EncodecModel

    torch.manual_seed(0)
    autoencoder = codec_train.CodecAutoencoder(EncodecModel(codec_train.small_encodec_config(tiny().codec)),
                                               input_gain=20.0).eval()
    wave = torch.randn(2, 1, 4800, generator=torch.Generator().manual_seed(1)) * 0.05
    with torch.no_grad():
        latent, reconstruction = autoencoder.encode(wave), autoencoder.reconstruct(wave)
        # the loss is the gain-1 loss of the audio x 20 (unit level), not of the quiet audio
        unit_level = codec_train.CodecAutoencoder(autoencoder.model)(wave * 20.0)
        torch.testing.assert_close(autoencoder(wave), unit_level, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(autoencoder(wave), codec_train.CodecAutoencoder(autoencoder.model)(wave))
        codec_train.fold_input_gain(autoencoder.model, 20.0)
        torch.testing.assert_close(autoencoder.model.encoder(wave), latent, rtol=1e-5, atol=1e-6)
        folded = autoencoder.model.decoder(autoencoder.model.encoder(wave))[..., :4800]
    torch.testing.assert_close(folded, reconstruction, rtol=1e-5, atol=1e-8)
    assert reconstruction.abs().max() > 1e-4  # not vacuous


def test_at_the_default_gain_the_latent_depends_on_quiet_audio():
    """The fix of the 2026-12-06 probes: mixtures sit at RMS ~0.05, where at initialisation the default-size encoder's
    output is >99 % bias (training then settles on one input-independent output); x train_input_gain it is not."""
    from transformers import EncodecModel

    config = load_config("smoke").codec
    wave = torch.randn(2, 1, 24000, generator=torch.Generator().manual_seed(0)) * 0.05  # RMS 0.05, like db120

    def input_share(gain):
        torch.manual_seed(0)
        autoencoder = codec_train.CodecAutoencoder(EncodecModel(codec_train.small_encodec_config(config)),
                                                   input_gain=gain).eval()
        with torch.no_grad():
            latent, silent = autoencoder.encode(wave), autoencoder.encode(torch.zeros_like(wave))
        return float((latent - silent).norm() / latent.norm())  # the part of the latent the input accounts for

    assert input_share(1.0) < 0.02  # measured 0.006: the old default
    assert input_share(config.train_input_gain) > 0.05  # measured 0.12 at gain 20
    with pytest.raises(ValueError, match="codec.train_input_gain"):
        load_config("smoke", {"codec.train_input_gain": 0.0})


def test_the_codec_loss_falls_on_a_tiny_overfit():
    from transformers import EncodecModel

    torch.manual_seed(0)
    config = tiny().codec
    autoencoder = codec_train.CodecAutoencoder(EncodecModel(codec_train.small_encodec_config(config)))
    t = torch.arange(6400) / 24000
    wave = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 660 * t))[None, None]
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = autoencoder(wave).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_codec_train_and_evaluate_from_the_command_line(slakh_root, tmp_path, capsys):
    """`ucr codec train` writes checkpoints and the save_pretrained folder; `ucr codec evaluate` scores it."""
    import json

    from ucr.cli import main

    run = tmp_path / "codec"
    sets = sum([["--set", f"{k}={v}"] for k, v in {**TINY, "train.steps": 2}.items()], [])
    assert main(["codec", "train", "--data", str(slakh_root), "--out", str(run), "--quiet", "--preset", "smoke",
                 *sets]) == 0
    assert (run / "final.pt").is_file() and (run / "encodec" / "model.safetensors").is_file()
    assert f"codec.weights={run / 'encodec'}" in capsys.readouterr().out
    assert main(["codec", "evaluate", "--data", str(slakh_root), "--split", "train", "--codecs", "encodec",
                 "--weights", str(run / "encodec"), "--latent-kind", "continuous", "--excerpts", "2", "--seconds",
                 "0.5", "--out", str(tmp_path / "report")]) == 0
    row = json.loads((tmp_path / "report" / "report.json").read_text())["encodec"]
    assert row["excerpts"] == 2 and row["si_sdr_db"] < 20  # two steps of training: far from transparent


def test_silent_excerpts_are_drawn_again_and_all_silent_audio_is_refused():
    """A track that ends in silence (a chorale's final rest): without the floor some excerpts are silent, and the
    loss's spectral convergence divides by their ~0 norm; with it none is, and the batch stays a function of the seed."""
    import numpy as np

    rate = 1000
    tone = 0.1 * np.sin(2 * np.pi * 5 * np.arange(3 * rate) / rate)
    track = np.concatenate([tone, np.zeros(3 * rate)]).astype(np.float32)  # 3 s of sound, then 3 s of silence

    def quietest(batch):
        return float(batch.pow(2).mean(dim=-1).sqrt().min())

    unfloored = [quietest(codec_train.excerpt_batch([track], 8, rate, seed)) for seed in range(20)]
    assert min(unfloored) == 0.0  # the case the floor exists for does occur
    floored = [codec_train.excerpt_batch([track], 8, rate, seed, min_rms=0.01) for seed in range(20)]
    assert min(quietest(b) for b in floored) >= 0.01
    assert torch.equal(floored[3], codec_train.excerpt_batch([track], 8, rate, 3, min_rms=0.01))
    with pytest.raises(ValueError, match="data.silence_rms"):
        codec_train.excerpt_batch([np.zeros(6 * rate, dtype=np.float32)], 2, rate, 0, min_rms=0.01)
