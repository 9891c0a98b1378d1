import numpy as np
import pytest
import torch

from tests.conftest import SR
from ucr.codec import MDCTCodec
from ucr.config import load_config
from ucr.data.latents import EncodeSettings, encode_split
from ucr.decomposer import Decomposer, build_decomposer
from ucr.pipeline import Pipeline, crossfade_weights
from ucr import checkpoint as ckpt
from ucr import audio
from ucr.train.tasks import build_decomposer_trainer


@pytest.fixture
def train_cache(slakh_root, tmp_path):
    out = str(tmp_path / "cache_train")
    settings = EncodeSettings(data_root=str(slakh_root), layout="slakh", split="train", sources=("Drums", "Bass"),
                              mix="mean", sample_rate=SR, chunk_seconds=0.5, silence_rms=0.01, with_stems=True,
                              tracks_per_shard=2)
    encode_split(settings, MDCTCodec(), out, progress=False)
    return out


def tiny(**overrides):
    return load_config("smoke", overrides)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


# ------------------------------------------------------------------------------------------------ model
def test_shapes_and_mean_composition():
    model = build_decomposer(tiny().model, latent_channels=8)
    x = torch.randn(3, 8, 16)
    z = model.components(x)
    assert z.shape == (3, 2, 1, 16)
    parts = model.denoise_each(x, torch.rand(3), z)
    assert parts.shape == (3, 2, 8, 16)
    torch.testing.assert_close(model.compose(parts), (parts[:, 0] + parts[:, 1]) / 2)
    assert model(x, generator=torch.Generator().manual_seed(0)).shape == (3,)
    assert model.separate(torch.randn(2, 8, 21), steps=2).shape == (2, 2, 8, 21)  # any T
    with pytest.raises(ValueError, match=r"\[B, 8, T\]"):
        model.loss(torch.randn(2, 7, 16))


def test_loss_decreases_on_a_tiny_overfit_problem():
    torch.manual_seed(0)
    model = build_decomposer(tiny(**{"model.dropout": 0.0}).model, latent_channels=8)
    x = torch.randn(4, 8, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        loss = model(x, generator=torch.Generator().manual_seed(step % 4)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])


def test_supervised_loss_targets_each_source():
    model = build_decomposer(tiny().model, latent_channels=8)
    sources = torch.randn(2, 2, 8, 16)
    loss = model(sources.mean(1), sources, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    with pytest.raises(ValueError, match="n_components"):
        model(sources.mean(1), torch.randn(2, 3, 8, 16))


def test_supervised_reference_sees_the_noisy_mixture_like_the_unsupervised_model():
    model = build_decomposer(tiny().model, latent_channels=8)
    sources = torch.randn(2, 2, 8, 16)
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[:2]))
    model(sources.mean(1), sources, generator=torch.Generator().manual_seed(0))
    x, a = seen[0]  # [B*K, C, T]: the K rows of an example share one noisy input, as in the unsupervised loss
    torch.testing.assert_close(x[0], x[1])
    assert float(a[0]) == float(a[1])


def test_normalisation_statistics_are_applied_and_saved():
    from ucr.codec import LatentStats

    stats = LatentStats(tuple(float(i) for i in range(8)), (2.0,) * 8)
    model = build_decomposer(tiny().model, latent_channels=8, stats=stats)
    x = torch.randn(1, 8, 16)
    torch.testing.assert_close(model.denormalize(model.normalize(x)), x)
    assert "latent_mean" in model.state_dict()


# ------------------------------------------------------------------------------------------------ loop
def test_exact_resume(train_cache, tmp_path):
    config = tiny(**{"train.steps": 6, "train.checkpoint_every": 3, "train.ema_decay": 0.9,
                     "train.warmup_steps": 2, "train.grad_clip": 1.0})
    straight = build_decomposer_trainer(config, train_cache, str(tmp_path / "a"), progress=False)
    straight.fit()
    halfway = build_decomposer_trainer(config.replace(**{"train.steps": 3}), train_cache, str(tmp_path / "b"),
                                       progress=False)
    halfway.fit()
    torch.manual_seed(12345)  # disturb the global RNG: resume must not depend on it
    resumed = build_decomposer_trainer(config, train_cache, str(tmp_path / "b"), progress=False)
    assert resumed.resume_if_possible() and resumed.step == 3
    resumed.fit(resume=False)
    assert resumed.step == 6
    torch.testing.assert_close(weights(resumed.module), weights(straight.module), rtol=0, atol=0)
    torch.testing.assert_close(weights(resumed.ema.model), weights(straight.ema.model), rtol=0, atol=0)


def test_learning_rate_warms_up_holds_and_decays_to_zero(train_cache, tmp_path):
    config = tiny(**{"train.steps": 10, "train.lr": 1e-3, "train.warmup_steps": 2, "train.decay_steps": 4})
    trainer = build_decomposer_trainer(config, train_cache, str(tmp_path / "run"), progress=False)
    # warmup (step+1)/2, then 1, then (10 - step)/4 over the last 4 steps: 6 -> 1.0, 7 -> 0.75, ..., 9 -> 0.25
    expected = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [round(trainer.lr_at(step) / 1e-3, 6) for step in range(10)] == expected
    used = []
    for step in range(3):
        trainer.train_step(trainer.batch_fn(step))
        used.append(trainer.optimizer.param_groups[0]["lr"])
    assert used == pytest.approx([5e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="train.decay_steps = 11 is longer than the run"):
        tiny(**{"train.steps": 10, "train.decay_steps": 11})
    # a run stopped inside the decay resumes onto the same schedule (the rate depends on the step, not on the state)
    config = config.replace(**{"train.steps": 6, "train.decay_steps": 3})
    straight = build_decomposer_trainer(config, train_cache, str(tmp_path / "a"), progress=False)
    straight.fit()
    stopped = build_decomposer_trainer(config, train_cache, str(tmp_path / "b"), progress=False)
    for step in range(4):
        stopped.train_step(stopped.batch_fn(step))
    stopped.save_checkpoint()
    resumed = build_decomposer_trainer(config, train_cache, str(tmp_path / "b"), progress=False)
    resumed.fit()
    assert resumed.step == 6
    torch.testing.assert_close(weights(resumed.module), weights(straight.module), rtol=0, atol=0)


def test_checkpoints_describe_themselves_and_are_pruned(train_cache, tmp_path, monkeypatch):
    config = tiny(**{"train.steps": 6, "train.checkpoint_every": 2, "train.keep_checkpoints": 2})
    logged = []
    from ucr import storage
    from ucr.train.loop import Hooks

    writes = []  # every write that reaches the storage layer (local or s3://), in order
    write_bytes = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda uri, data: (writes.append(uri), write_bytes(uri, data)))

    trainer = build_decomposer_trainer(config, train_cache, str(tmp_path / "run"), progress=False,
                                       hooks=Hooks(on_log=lambda step, m: logged.append((step, m))))
    result = trainer.fit()
    assert [s for s, _ in ckpt.step_checkpoints(str(tmp_path / "run"))] == [4, 6]
    payload = ckpt.load(str(tmp_path / "run"))
    assert payload["kind"] == "decomposer" and payload["step"] == 6
    assert payload["config"]["model"]["n_components"] == 2
    assert payload["codec"]["fingerprint"] == MDCTCodec().fingerprint
    assert {"model", "optimizer", "rng", "sources"} <= set(payload)
    assert [s for s, _ in logged] == [2, 4, 6] and {"loss", "lr", "steps_per_sec"} <= set(logged[0][1])
    assert result.final_uri.endswith("final.pt")
    # one write per checkpoint: each step checkpoint and final.pt reach storage exactly once, nothing else does
    names = [uri.rsplit("/", 1)[-1] for uri in writes]
    assert names == ["step-00000002.pt", "step-00000004.pt", "step-00000006.pt", "final.pt"], names


def test_supervised_reference_trains(train_cache, tmp_path):
    trainer = build_decomposer_trainer(tiny(), train_cache, str(tmp_path / "sup"), supervised=True, progress=False)
    trainer.fit()
    assert ckpt.load(str(tmp_path / "sup"))["kind"] == "supervised"


def test_a_cache_of_another_codec_is_refused_before_training(train_cache, tmp_path):
    # the cache holds the MDCT at hop 320; a run configured at hop 640 (or in another codec) would train a model
    # that its own config's codec cannot load
    for override, named in (({"codec.hop_length": 640}, "hop_length 640"), ({"codec.name": "stft_mag"}, "stft_mag")):
        with pytest.raises(ValueError, match=f"holds latents of codec mdct-sr24000-hop320.*{named}"):
            build_decomposer_trainer(tiny(**override), train_cache, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "x.pt"
    bogus.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a UCR checkpoint"):
        ckpt.load(str(bogus))
    with pytest.raises(ValueError, match="no checkpoint"):
        ckpt.load(str(tmp_path))



@pytest.mark.parametrize("payload, message", [
    ({"kind": "decomposer", "model": {}, "codec": {}}, r"incomplete UCR checkpoint: field\(s\) \['config'\]"),
    ({"kind": "decomposer", "config": "x", "model": {}, "codec": {}}, r"\['config'\] missing or of the wrong type"),
    ({"kind": "mystery", "config": {}, "model": {}, "codec": {}}, r"unknown kind 'mystery'"),
])
def test_incomplete_checkpoints_get_one_clear_sentence(tmp_path, payload, message):
    path = tmp_path / "partial.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message):
        ckpt.load(str(path))
    from ucr.cli import main

    song = tmp_path / "song.wav"
    audio.write(str(song), np.zeros(2400, dtype=np.float32) + 0.1, 24000)
    assert main(["separate", str(song), "--model", str(path), "--out", str(tmp_path / "out")]) != 0


# ------------------------------------------------------------------------------------------------ pipeline
@pytest.fixture
def pipeline(train_cache, tmp_path):
    build_decomposer_trainer(tiny(), train_cache, str(tmp_path / "run"), progress=False).fit()
    return Pipeline.from_checkpoint(str(tmp_path / "run"))


def test_separate_any_length_and_rate(pipeline):
    rng = np.random.default_rng(0)
    for seconds, rate, channels in [(0.3, SR, 1), (2.3, 44100, 2)]:
        wave = rng.normal(size=(channels, int(seconds * rate))).astype(np.float32) * 0.1
        result = pipeline.separate(wave, rate, steps=2)
        assert result.components.shape[0] == 2 and abs(result.components.shape[1] - seconds * SR) <= 1
        assert np.isfinite(result.components).all()
    again = pipeline.separate(wave, 44100, steps=2)
    np.testing.assert_array_equal(again.components, result.components)  # seeded


def test_separate_bad_input(pipeline):
    with pytest.raises(ValueError, match="silent"):
        pipeline.separate(np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="too short"):
        pipeline.separate(np.ones(100, dtype=np.float32), SR)
    nan = np.ones(SR, dtype=np.float32)
    nan[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pipeline.separate(nan, SR)
    with pytest.raises(ValueError, match="steps"):
        pipeline.separate(np.ones(SR, dtype=np.float32), SR, steps=0)
    with pytest.raises(ValueError, match=r"\[L\] or \[channels, L\]"):
        pipeline.separate(np.ones((1, 1, SR), dtype=np.float32), SR)


def test_crossfade_weights_sum_to_one_over_overlaps():
    first = crossfade_weights(8, 4, True, False)
    second = crossfade_weights(8, 4, False, True)
    torch.testing.assert_close(first[4:] + second[:4], torch.ones(4))
    assert first[0] == 1 and second[-1] == 1


def test_windowed_separation_matches_single_window_for_a_linear_model(pipeline):
    """With a model whose output ignores context (zeroed decoder -> constant), windows must stitch seamlessly."""
    latent = torch.randn(320, 100)
    for parameter in pipeline.model.decoder.parameters():
        torch.nn.init.zeros_(parameter)
    long = pipeline.separate_latent(latent, steps=1, window_frames=16, overlap_frames=4)
    single = pipeline.separate_latent(latent, steps=1, window_frames=128)
    torch.testing.assert_close(long, single)


def test_projection_onto_the_mixture_is_exact_and_energy_weighted():
    from ucr.decomposer import project_to_mixture

    parts = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [B=1, K=2, C=1, T=2]
    mixture = torch.tensor([[[3.0, 1.0]]])  # [B, C, T]
    corrected = project_to_mixture(parts, mixture, smooth=(1, 1))
    torch.testing.assert_close(corrected.mean(1), mixture)
    # frame 0: residual 3 - 1 = 2 goes (almost) all to part 0, which holds (almost) all the energy
    assert corrected[0, 0, 0, 0] == pytest.approx(6.0, abs=1e-5) and corrected[0, 1, 0, 0] == pytest.approx(0, abs=1e-5)
    smoothed = project_to_mixture(parts, mixture)  # default 3x3 smoothing: still exact in composition
    torch.testing.assert_close(smoothed.mean(1), mixture)


def test_mixture_consistent_separation_composes_to_the_input():
    model = build_decomposer(tiny().model, latent_channels=8).eval()
    mixture = torch.randn(2, 8, 20)
    parts = model.separate(mixture, steps=3, generator=torch.Generator().manual_seed(0), mode="mixture_consistent")
    torch.testing.assert_close(parts.mean(1), mixture, atol=1e-4, rtol=1e-4)
    free = model.separate(mixture, steps=3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(free.mean(1), mixture, atol=1e-2)
    with pytest.raises(ValueError, match="separation mode"):
        model.separate(mixture, mode="magic")


def test_checkpoint_loading_never_runs_code(tmp_path):
    """A planted checkpoint whose unpickling would run code is refused, and the code does not run."""
    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "planted.pt"
    torch.save({"kind": "decomposer", "config": {}, "payload": Planted()}, bad)
    with pytest.raises(ValueError, match="not a UCR checkpoint.*refused rather than unpickled"):
        ckpt.load(str(bad))
    assert not marker.exists()


def test_rng_state_round_trips_through_a_data_only_checkpoint(tmp_path):
    import random

    np.random.seed(3)
    random.seed(3)
    torch.manual_seed(3)
    ckpt.save(str(tmp_path / "c.pt"), {"kind": "decomposer", "rng": ckpt.rng_state(), "config": {}, "model": {},
                                       "codec": {}})
    expected = (np.random.rand(), random.random(), torch.rand(1).item())
    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    ckpt.set_rng_state(ckpt.load(str(tmp_path / "c.pt"))["rng"])
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected


def test_old_pickled_checkpoint_is_refused_then_converted_knowingly(tmp_path):
    old_rng = {**ckpt.rng_state(), "numpy": np.random.get_state()}  # the earlier format: a numpy array inside
    old = tmp_path / "old.pt"
    torch.save({"kind": "decomposer", "step": 7, "rng": old_rng, "config": {}, "model": {}, "codec": {}}, old)
    with pytest.raises(ValueError, match="refused rather than unpickled"):
        ckpt.load(str(old))
    ckpt.convert_trusted(str(old), str(tmp_path / "new.pt"))
    converted = ckpt.load(str(tmp_path / "new.pt"))
    assert converted["step"] == 7
    ckpt.set_rng_state(converted["rng"])


def test_warm_start_loads_the_weights_and_starts_a_fresh_run(train_cache, tmp_path):
    first = build_decomposer_trainer(tiny(**{"train.steps": 3}), train_cache, str(tmp_path / "first"),
                                     progress=False)
    first.fit()
    warm = build_decomposer_trainer(tiny(**{"train.init_from": str(tmp_path / "first")}), train_cache,
                                    str(tmp_path / "warm"), progress=False)
    torch.testing.assert_close(weights(warm.module), weights(first.module), rtol=0, atol=0)
    assert warm.step == 0 and not warm.resume_if_possible()  # a new run: its own step, optimiser and folder
    other = tiny(**{"train.init_from": str(tmp_path / "first"), "model.unet_channels": [8, 16]})
    with pytest.raises(ValueError, match="another architecture"):
        build_decomposer_trainer(other, train_cache, str(tmp_path / "other"), progress=False)
    with pytest.raises(ValueError, match="supervised"):
        build_decomposer_trainer(tiny(**{"train.init_from": str(tmp_path / "first")}), train_cache,
                                 str(tmp_path / "sup"), supervised=True, progress=False)


def test_frozen_encoders_keep_their_weights_while_the_decoder_trains(train_cache, tmp_path):
    first = build_decomposer_trainer(tiny(**{"train.steps": 2}), train_cache, str(tmp_path / "first"),
                                     progress=False)
    first.fit()
    frozen = build_decomposer_trainer(tiny(**{"train.steps": 3, "train.init_from": str(tmp_path / "first"),
                                              "train.freeze_encoders": True}), train_cache,
                                      str(tmp_path / "frozen"), progress=False)
    encoders = {k: v.clone() for k, v in frozen.module.encoders.state_dict().items()}
    decoder = {k: v.clone() for k, v in frozen.module.decoder.state_dict().items()}
    frozen.fit()
    for name, value in frozen.module.encoders.state_dict().items():
        torch.testing.assert_close(value, encoders[name], rtol=0, atol=0)
    assert any(not torch.equal(value, decoder[name]) for name, value in frozen.module.decoder.state_dict().items())
    with pytest.raises(ValueError, match="freeze_encoders needs train.init_from"):
        tiny(**{"train.freeze_encoders": True})


def test_refine_phase_holds_the_encoders_switches_the_loss_and_resumes_exactly(train_cache, tmp_path):
    """train.refine_at: from that step on the encoders do not move (not even by weight decay) and the loss weighs
    channels by var^refine_channel_power; a run stopped inside either phase resumes to the same weights."""
    overrides = {"train.steps": 4, "train.refine_at": 2, "train.checkpoint_every": 2, "train.keep_checkpoints": 5,
                 "train.weight_decay": 0.1, "train.refine_channel_power": 1.0}
    trainer = build_decomposer_trainer(tiny(**overrides), train_cache, str(tmp_path / "run"), progress=False)
    assert trainer.module.loss_channel_power == 0.0
    trainer.fit()
    assert trainer.module.loss_channel_power == 1.0
    at_switch = ckpt.load(str(tmp_path / "run" / "checkpoints" / "step-00000002.pt"))["model"]
    final = ckpt.load(str(tmp_path / "run" / "final.pt"))["model"]
    encoder_keys = [k for k in final if k.startswith("encoders.")]
    decoder_keys = [k for k in final if k.startswith("decoder.")]
    assert encoder_keys and all(torch.equal(final[k], at_switch[k]) for k in encoder_keys)
    assert any(not torch.equal(final[k], at_switch[k]) for k in decoder_keys)
    for stop in (1, 3):  # inside the first phase, inside the second
        stopped = build_decomposer_trainer(tiny(**{**overrides, "train.steps": stop}), train_cache,
                                           str(tmp_path / f"stop{stop}"), progress=False)
        stopped.fit()
        resumed = build_decomposer_trainer(tiny(**overrides), train_cache, str(tmp_path / f"stop{stop}"),
                                           progress=False)
        resumed.fit()
        torch.testing.assert_close(weights(resumed.module), weights(trainer.module), rtol=0, atol=0)


def test_the_supervised_reference_of_a_refined_recipe_trains_under_the_refined_loss(train_cache, tmp_path):
    trainer = build_decomposer_trainer(tiny(**{"train.refine_at": 2, "train.refine_channel_power": 0.5}),
                                       train_cache, str(tmp_path / "sup"), supervised=True, progress=False)
    assert trainer.module.loss_channel_power == 0.5 and trainer.schedule is None
