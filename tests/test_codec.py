import math
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ucr.codec import MDCTCodec, LatentStats, build_codec
from ucr.codec.encodec import EncodecCodec, WeightsNotFoundError, load_encodec_model
from ucr.config import CodecConfig, load_config


# ---------------------------------------------------------------------------------------------- MDCT
@pytest.mark.parametrize("length", [320 * 75, 24000 * 2 + 123, 321])
def test_mdct_perfect_reconstruction(length):
    codec = MDCTCodec()
    wave = torch.randn(3, 1, length, generator=torch.Generator().manual_seed(length))
    latent = codec.encode(wave)
    assert latent.shape == (3, 320, -(-length // 320))
    decoded = codec.decode(latent)
    assert decoded.shape == (3, 1, latent.shape[-1] * 320)
    error = (decoded[..., :length] - wave).norm() / wave.norm()
    assert error < 1e-5
    if decoded.shape[-1] > length:
        assert decoded[..., length:].abs().max() < 1e-5  # the zero padding comes back as zeros


def test_mdct_framing_matches_encodec():
    codec = MDCTCodec()
    assert codec.sample_rate == 24000 and codec.frame_rate == 75.0 and codec.channels == 320


def test_mdct_is_linear_and_orthogonal():
    codec = MDCTCodec()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 24000, generator=gen), torch.randn(2, 1, 24000, generator=gen)
    za, zb, zab = codec.encode(a), codec.encode(b), codec.encode(a + 0.5 * b)
    assert (zab - (za + 0.5 * zb)).abs().max() < 1e-4
    # orthogonal transform: energy is preserved (Parseval)
    assert codec.encode(a).norm() / a.norm() == pytest.approx(1.0, abs=1e-5)


def test_mdct_band_follows_frequency():
    codec = MDCTCodec()
    t = torch.arange(24000) / 24000
    for freq in (300.0, 3000.0):
        latent = codec.encode(torch.sin(2 * torch.pi * freq * t)[None, None])
        band = latent[0].pow(2).mean(-1).argmax().item()
        assert abs((band + 0.5) * 24000 / (2 * 320) - freq) < 40  # band k is centred on (k + 1/2) * sr / 2N


def test_shape_errors():
    codec = MDCTCodec()
    with pytest.raises(ValueError, match=r"\[B, 1, L\]"):
        codec.encode(torch.zeros(2, 2, 640))
    with pytest.raises(ValueError, match="zero-length"):
        codec.encode(torch.zeros(1, 1, 0))
    with pytest.raises(ValueError, match=r"\[B, 320, T\]"):
        codec.decode(torch.zeros(1, 128, 10))


# ---------------------------------------------------------------------------------------------- EnCodec
def test_encodec_shapes_rate_determinism(tiny_encodec):
    codec = EncodecCodec(tiny_encodec)
    assert codec.sample_rate == 24000 and codec.frame_rate == 75.0 and codec.hop_length == 320
    wave = torch.randn(2, 1, 24000 + 100, generator=torch.Generator().manual_seed(1)) * 0.1
    latent = codec.encode(wave)
    assert latent.shape == (2, 16, 76)
    assert torch.equal(latent, codec.encode(wave))  # deterministic
    assert codec.decode(latent).shape == (2, 1, 76 * 320)
    assert not latent.requires_grad


def test_encodec_quantized_vs_continuous(tiny_encodec):
    wave = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(2)) * 0.1
    quantized = EncodecCodec(tiny_encodec, latent_kind="quantized", bandwidth=24.0)
    continuous = EncodecCodec(tiny_encodec, latent_kind="continuous")
    coarse = EncodecCodec(tiny_encodec, latent_kind="quantized", bandwidth=1.5)
    zq, zc, z_coarse = quantized.encode(wave), continuous.encode(wave), coarse.encode(wave)
    assert zq.shape == zc.shape == z_coarse.shape
    assert not torch.allclose(zq, zc)
    assert not torch.allclose(zq, z_coarse)  # 2 codebooks vs 32
    assert torch.allclose(zc, tiny_encodec.encoder(wave), atol=1e-6)
    assert len({quantized.fingerprint, continuous.fingerprint, coarse.fingerprint}) == 3


def test_encodec_segments_bound_memory_and_agree(tiny_encodec):
    wave = torch.randn(1, 1, 24000 * 2, generator=torch.Generator().manual_seed(3)) * 0.1
    whole = EncodecCodec(tiny_encodec, latent_kind="continuous", segment_seconds=600)
    pieces = EncodecCodec(tiny_encodec, latent_kind="continuous", segment_seconds=0.5, context_seconds=0.5)
    assert len(list(pieces._segments(150))) == 4
    z_whole, z_pieces = whole.encode(wave), pieces.encode(wave)
    assert z_pieces.shape == z_whole.shape
    assert ((z_pieces - z_whole).norm() / z_whole.norm()) < 0.05
    y_whole, y_pieces = whole.decode(z_whole), pieces.decode(z_whole)
    assert y_pieces.shape == y_whole.shape


def test_encodec_save_and_load_through_real_loader(tiny_encodec, tmp_path):
    folder = tmp_path / "encodec_tiny"
    tiny_encodec.save_pretrained(str(folder))
    wave = torch.randn(1, 1, 12000, generator=torch.Generator().manual_seed(4)) * 0.1
    original = EncodecCodec(tiny_encodec)
    loaded = build_codec(CodecConfig(name="encodec", weights=str(folder)))
    assert torch.equal(original.encode(wave), loaded.encode(wave))
    assert original.fingerprint == loaded.fingerprint


def test_missing_weights_fail_fast_with_remedy(tmp_path):
    started = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as info:
        load_encodec_model("facebook/encodec_24khz")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "hf download facebook/encodec_24khz" in message and "--codec mdct" in message
    assert "codec.weights" in message and "HF_HUB_OFFLINE" in message and "codec.name=mdct" in message
    with pytest.raises(WeightsNotFoundError, match="no config.json"):
        load_encodec_model(str(tmp_path))


def test_missing_weights_fail_fast_with_network_allowed(tmp_path):
    """Without HF_HUB_OFFLINE the loader probes the hub once (bounded) instead of retrying for a minute."""
    code = ("import time, sys\n"
            "from ucr.codec.encodec import load_encodec_model, WeightsNotFoundError\n"
            "t = time.monotonic()\n"
            "try:\n    load_encodec_model('facebook/encodec_24khz')\nexcept WeightsNotFoundError:\n"
            "    print(time.monotonic() - t); sys.exit(0)\n"
            "sys.exit(3)\n")
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    if done.returncode == 3:
        pytest.skip("the hub is reachable from this machine: weights downloaded")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 5


# ---------------------------------------------------------------------------------------------- normalisation stats
def test_latent_stats_standardise_per_channel():
    gen = torch.Generator().manual_seed(5)
    scale = torch.tensor([1.0, 10.0, 0.1])[:, None]
    offset = torch.tensor([0.0, -3.0, 5.0])[:, None]
    batches = [torch.randn(4, 3, 50, generator=gen) * scale + offset for _ in range(5)]
    stats = LatentStats.from_latents(batches)
    np.testing.assert_allclose(stats.mean, [0.0, -3.0, 5.0], atol=1.5)  # se of channel 1: 10/sqrt(1000)
    np.testing.assert_allclose(stats.std, [1.0, 10.0, 0.1], rtol=0.1)
    normalised = stats.normalize(torch.cat(batches))
    np.testing.assert_allclose(normalised.mean((0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.std((0, 2), unbiased=False), 1, atol=1e-4)
    assert torch.allclose(stats.denormalize(normalised), torch.cat(batches), atol=1e-4)
    assert LatentStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(ValueError, match="channels"):
        stats.normalize(torch.zeros(1, 4, 10))


def test_stft_magnitude_codec_framing_exact_spectrum_and_masks():
    from ucr.codec.stft import STFTMagnitudeCodec, mask_decode

    codec = build_codec(CodecConfig(name="stft_mag"))
    assert isinstance(codec, STFTMagnitudeCodec) and codec.channels == 321 and codec.frame_rate == 75
    wave = torch.randn(2, 1, 4800, generator=torch.Generator().manual_seed(0))
    latent = codec.encode(wave)
    assert latent.shape == (2, 321, 15) and bool((latent >= 0).all())
    spectrum = codec.spectrum(wave[:, 0])
    torch.testing.assert_close(codec.inverse(spectrum), wave[:, 0], atol=1e-5, rtol=0)  # exact with the phase
    # a sinusoid on a bin centre: its magnitude sits in that bin, steady over frames (the smoothness MDCT lacks)
    t = torch.arange(4800) / 24000
    tone = torch.sin(2 * torch.pi * 30 * 37.5 * t)[None, None]  # bin 30 (37.5 Hz per bin)
    magnitude = codec.encode(tone)[0]
    assert bool((magnitude.argmax(dim=0) == 30).all()) and float(magnitude[30].std() / magnitude[30].mean()) < 1e-3
    # ratio masks of any magnitudes split the mixture exactly
    parts = torch.stack([latent * 0.2, latent * 0.5, latent.flip(-1)], dim=1)
    waves = mask_decode(codec, parts, wave[:, 0])
    assert waves.shape == (2, 3, 4800)
    torch.testing.assert_close(waves.sum(1), wave[:, 0], atol=1e-5, rtol=0)
    assert codec.decode(latent).shape == (2, 1, 4800)  # Griffin-Lim: lossy, but the framing holds


def test_separated_components_decode_against_the_mixture_where_the_latent_drops_its_phase():
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(4700) / 24000
    low, high = torch.sin(2 * torch.pi * 150 * t), 0.5 * torch.sin(2 * torch.pi * 3000 * t)  # far apart in frequency
    mixture = (low + high)[None]  # [1, L], L not a multiple of the hop
    for name in ("mdct", "stft_if"):  # a latent that keeps the phase: each component decoded on its own
        codec = build_codec(CodecConfig(name=name))
        parts = torch.randn(2, 3, codec.channels, 15, generator=gen)
        waves = codec.decode_components(parts, torch.randn(2, 4700, generator=gen))
        torch.testing.assert_close(waves, codec.decode(parts.reshape(6, codec.channels, 15)).reshape(2, 3, -1))
    codec = build_codec(CodecConfig(name="stft_mag"))
    stems = torch.stack([codec.encode(low[None, None]), codec.encode(high[None, None])], dim=1)  # [1, 2, C, T]
    waves = codec.decode_components(stems, mixture)  # the stems' own magnitudes, the mixture's phase
    assert waves.shape == (1, 2, 15 * 320)
    torch.testing.assert_close(waves.sum(1)[:, :4700], mixture, atol=1e-5, rtol=0)  # the masks sum to one
    for wave, stem in zip(waves[0, :, 320:4380], (low[320:4380], high[320:4380])):  # away from the circular edges
        assert float(((wave - stem) ** 2).mean() / (stem ** 2).mean()) < 1e-2
    whole = codec.decode_components(torch.stack([stems.sum(1), torch.zeros_like(stems[:, 0])], dim=1), mixture)
    torch.testing.assert_close(whole[0, 0, :4700], mixture[0], atol=1e-5, rtol=0)  # one component takes it all
    assert float(whole[0, 1].abs().max()) == 0.0
    with pytest.raises(ValueError, match="more than"):
        codec.decode_components(stems, torch.zeros(1, 15 * 320 + 1))
    with pytest.raises(ValueError, match=r"parts \[B, K, 321, T\]"):
        codec.decode_components(stems[0], mixture)


def test_the_mask_power_sharpens_the_masks_and_keeps_their_sum():
    # magnitudes 3 and 1 in every bin: ratio masks 3/4 and 1/4 (power 1), 9/10 and 1/10 (power 2), the same gain
    # in every bin, so each component is exactly that fraction of the mixture
    codec = build_codec(CodecConfig(name="stft_mag"))
    mixture = torch.randn(1, 15 * 320, generator=torch.Generator().manual_seed(0))
    parts = torch.stack([torch.full((codec.channels, 15), 3.0), torch.ones(codec.channels, 15)])[None]  # [1, 2, C, T]
    for power, share in ((1.0, 0.75), (2.0, 0.9), (0.5, 3 ** 0.5 / (3 ** 0.5 + 1))):
        waves = codec.decode_components(parts, mixture, mask_power=power)
        torch.testing.assert_close(waves[0, 0], share * mixture[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(waves.sum(1), mixture, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mask_power"):
        codec.decode_components(parts, mixture, mask_power=0.0)
    with pytest.raises(ValueError, match="diffusion.mask_power"):
        load_config("smoke", {"diffusion.mask_power": 0.0})
    mdct = build_codec(CodecConfig(name="mdct"))  # no masks: the power changes nothing
    latent = torch.randn(1, 2, mdct.channels, 15, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mdct.decode_components(latent, mixture, mask_power=2.0),
                               mdct.decode_components(latent, mixture))


def test_stft_if_codec_is_exact_and_steady_partials_are_constants():
    """Compressed magnitude + instantaneous frequency: exact round trip (the first frame's phase rides in d_0), a
    steady partial constant over frames in both halves, silent bins 0 in the frequency half."""
    import math

    from ucr.codec.stft import STFTPhaseCodec

    codec = build_codec(CodecConfig(name="stft_if"))
    assert isinstance(codec, STFTPhaseCodec) and codec.channels == 642 and codec.frame_rate == 75
    assert codec.fingerprint != build_codec(CodecConfig(name="stft_mag")).fingerprint
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(4800) / 24000
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t + 1.0)  # between bins 11 and 12
    wave = torch.stack([0.1 * torch.randn(4800, generator=generator), tone])[:, None]  # [2, 1, 4800]
    latent = codec.encode(wave)
    assert latent.shape == (2, 642, 15)
    decoded = codec.decode(latent)
    error = (decoded - wave).square().sum(-1) / wave.square().sum(-1)
    assert float(error.max()) < 1e-8  # > 80 dB SNR on noise and on a tone
    magnitude, frequency = latent[1, :321], latent[1, 321:]
    assert bool((magnitude.argmax(dim=0) == 12).all())
    assert float(magnitude[12].std() / magnitude[12].mean()) < 1e-3
    assert float(frequency[12, 1:].std()) < 1e-3 * float(frequency[12, 1:].abs().mean())  # constant after frame 0
    silent = codec.encode(torch.zeros(1, 1, 4800))
    assert bool((silent == 0).all())
    # not linear: the latent of a sum is not the sum of the latents
    assert not torch.allclose(codec.encode(wave.sum(0, keepdim=True)), latent.sum(0, keepdim=True), atol=1e-2)


def test_codec_metrics_against_closed_forms():
    from ucr.codec.evaluate import log_mel_distance, mel_filterbank, multi_resolution_stft_distance

    bank = mel_filterbank(24000, 1024)
    assert bank.shape == (80, 513) and float(bank.max(dim=1).values.min()) > 0.5 and float(bank.max()) <= 1.0
    x = torch.randn(2, 12000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(multi_resolution_stft_distance(x, x), torch.zeros(2))
    assert torch.allclose(log_mel_distance(x, x, 24000), torch.zeros(2))
    # twice as loud: spectral convergence 1 and |log 2| at every bin (the 1e-5 floor aside)
    torch.testing.assert_close(multi_resolution_stft_distance(2 * x, x), torch.full((2,), 1 + math.log(2)),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(log_mel_distance(2 * x, x, 24000), torch.full((2,), 2 * math.log(2)),
                               atol=2e-3, rtol=0)


def test_codec_evaluate_table_on_stems(slakh_root, tmp_path, capsys):
    """`ucr codec evaluate`: the MDCT exact and additive, the IF codec exact and not additive, a report written."""
    import json

    from ucr.cli import main

    out = tmp_path / "codecs"
    assert main(["codec", "evaluate", "--data", str(slakh_root), "--split", "train", "--codecs", "mdct,stft_if",
                 "--excerpts", "2", "--seconds", "0.5", "--out", str(out)]) == 0
    rows = json.loads((out / "report.json").read_text())
    assert rows["mdct"]["si_sdr_db"] > 60 and rows["mdct"]["composition_error"] < 1e-5
    assert rows["stft_if"]["si_sdr_db"] > 60 and rows["stft_if"]["composition_error"] > 0.05
    assert rows["mdct"]["excerpts"] == 2 and "| stft_if | 642 x 75 | exact |" in (out / "report.md").read_text()
    assert main(["codec", "evaluate", "--data", str(slakh_root), "--split", "train", "--codecs", "stft_mag",
                 "--excerpts", "1", "--seconds", "0.5", "--hop-length", "640", "--out", str(out)]) == 0
    assert "| stft_mag | 641 x 37.5 |" in (out / "report.md").read_text()  # the hop reaches the codec
    assert main(["codec", "evaluate", "--data", str(slakh_root), "--codecs", "mdct,wavelet"]) == 2
    assert "choose among" in capsys.readouterr().err
    assert main(["codec", "evaluate", "--data", str(slakh_root), "--codecs", "mdct", "--hop-length", "321"]) == 2
    assert "must be even" in capsys.readouterr().err


def test_codec_hop_length_sets_the_analytic_codecs_framing():
    for name, channels in (("mdct", 960), ("stft_mag", 961), ("stft_if", 1922)):
        codec = build_codec(CodecConfig(name=name, hop_length=960))
        assert codec.channels == channels and codec.frame_rate == 25.0
        assert "hop960" in codec.fingerprint
    wave = torch.randn(1, 1, 9600, generator=torch.Generator().manual_seed(0))
    codec = build_codec(CodecConfig(hop_length=960))
    torch.testing.assert_close(codec.decode(codec.encode(wave)), wave, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="must be even"):
        CodecConfig(hop_length=321)
    with pytest.raises(ValueError, match=r"fixed at 320 for EnCodec .*--set codec.hop_length=320.*x 3 frames"):
        CodecConfig(name="encodec", hop_length=960)
