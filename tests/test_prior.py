import numpy as np
import pytest
import torch

from tests.conftest import SR
from tests.test_train import tiny, train_cache  # noqa: F401 (fixture)
from ucr.pipeline import Pipeline
from ucr.prior import MaskedPrior, sample_masks, validation_loss
from ucr import checkpoint as ckpt
from ucr.train.tasks import build_decomposer_trainer, build_prior_trainer


@pytest.mark.parametrize("K, p_all", [(2, 0.5), (3, 0.5), (3, 0.2), (1, 0.5)])
def test_mask_frequencies_match_the_setting(K, p_all):
    masks = sample_masks(40000, K, p_all, torch.Generator().manual_seed(0))
    assert masks.any(dim=1).all()  # never the empty mask
    full = masks.all(dim=1).float().mean().item()
    if K == 1:
        assert full == 1.0
        return
    assert full == pytest.approx(p_all, abs=0.01)
    partial = masks[~masks.all(dim=1)]
    codes = (partial.long() * (2 ** torch.arange(K))).sum(1)
    counts = torch.bincount(codes, minlength=2 ** K).float()
    nonzero = counts[counts > 0]
    assert len(nonzero) == 2 ** K - 2  # every other non-empty subset occurs
    assert (nonzero / nonzero.sum()).sub(1 / len(nonzero)).abs().max() < 0.02  # ... uniformly


def test_loss_counts_masked_components_only():
    prior = MaskedPrior(2, unet_channels=(16, 32), attention_levels=(), embedding_dim=16, dropout=0.0)
    z = torch.randn(8, 2, 1, 16)
    assert prior(z, torch.Generator().manual_seed(0)).shape == (8,)
    # a denoiser that is perfect on component 0 and wrong on component 1: loss 0 exactly when only 0 is masked
    prior.denoise = lambda x, a, mask: torch.stack([(z[:, 0] - prior.z_mean[0]) / prior.z_std[0],
                                                    torch.full_like(z[:, 1], 9.0)], dim=1)
    import ucr.prior as prior_module

    original = prior_module.sample_masks
    prior_module.sample_masks = lambda B, K, p, g=None: torch.tensor([[True, False]] * B)
    try:
        assert prior(z).abs().max() == 0
    finally:
        prior_module.sample_masks = original


def test_validation_loss_closed_form_and_same_task_for_every_setting():
    z = torch.randn(10, 3, 1, 16) * 2.0 + 1.0  # [N, K, Cz, T]
    priors = [MaskedPrior(3, unet_channels=(16, 32), attention_levels=(), embedding_dim=16, dropout=0.0,
                          all_masked_prob=p) for p in (0.2, 0.8)]
    priors[1].load_state_dict(priors[0].state_dict())
    for prior in priors:
        prior.set_statistics(z)
    first = validation_loss(priors[0], z, seed=3, batch_size=4)
    assert first == validation_loss(priors[0], z, seed=3, batch_size=4)  # the same draws every time
    assert first == pytest.approx(validation_loss(priors[1], z, seed=3, batch_size=4), rel=1e-6)  # whatever p
    # a denoiser predicting 0: the loss is the mean square of the standardised masked components, mask drawn
    # first from the seeded generator with probability 0.5 of all-masked
    for prior in priors:
        prior.denoise = lambda x, a, mask: torch.zeros_like(x)
    masks = sample_masks(10, 3, 0.5, torch.Generator().manual_seed(3))  # [N, K]
    clean = (z - priors[0].z_mean) / priors[0].z_std
    per_component = clean.square().mean(dim=(2, 3))  # [N, K]
    expected = ((per_component * masks).sum(1) / masks.sum(1)).mean()
    assert validation_loss(priors[0], z, seed=3, batch_size=4) == pytest.approx(float(expected), rel=1e-5)


def test_kept_components_untouched_and_seeds_reproduce():
    prior = MaskedPrior(3, unet_channels=(16, 32), attention_levels=(), embedding_dim=16, dropout=0.0).eval()
    known = torch.randn(2, 3, 1, 21)
    keep = torch.tensor([[True, False, True], [False, True, False]])
    out = prior.sample(known, keep=keep, steps=3, generator=torch.Generator().manual_seed(1))
    assert out.shape == known.shape
    assert torch.equal(out[0, 0], known[0, 0]) and torch.equal(out[0, 2], known[0, 2])
    assert torch.equal(out[1, 1], known[1, 1]) and not torch.allclose(out[1, 0], known[1, 0])
    again = prior.sample(known, keep=keep, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = prior.sample(known, keep=keep, steps=3, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out[1, 0], other[1, 0])
    assert prior.sample((2, 10), steps=2).shape == (2, 3, 1, 10)
    with pytest.raises(ValueError, match="keep"):
        prior.sample(known, keep=None)


@pytest.fixture
def prior_run(train_cache, tmp_path):  # noqa: F811
    build_decomposer_trainer(tiny(), train_cache, str(tmp_path / "dec"), progress=False).fit()
    trainer = build_prior_trainer(tiny(), str(tmp_path / "dec"), train_cache, str(tmp_path / "prior"),
                                  progress=False)
    trainer.fit()
    return str(tmp_path / "prior"), str(tmp_path / "dec")


def test_prior_ignores_the_decomposers_refine_and_decay_schedule(prior_run, train_cache, tmp_path):  # noqa: F811
    # the demo preset's decomposer anneals over 800 steps, longer than its prior's 400: the prior must still build
    _, decomposer = prior_run
    config = tiny(**{"train.steps": 50, "train.refine_at": 20, "train.decay_steps": 30, "prior.steps": 3})
    trainer = build_prior_trainer(config, decomposer, train_cache, str(tmp_path / "p2"), progress=False)
    assert (trainer.config.steps, trainer.config.refine_at, trainer.config.decay_steps) == (3, 0, 0)
    assert trainer.lr_at(2) == pytest.approx(config.prior.lr)


def test_prior_training_checkpoint_embeds_the_decomposer(prior_run, tmp_path):
    prior_uri, _ = prior_run
    payload = ckpt.load(prior_uri)
    assert payload["kind"] == "prior" and payload["decomposer"]["kind"] == "decomposer"
    assert (tmp_path / "prior" / "z_cache.pt").exists()


def test_generate_vary_recompose(prior_run):
    prior_uri, decomposer_uri = prior_run
    pipeline = Pipeline.from_checkpoint(prior_uri)
    generated = pipeline.generate(n=2, seconds=0.4, seed=3, steps=2)
    assert generated["components"].shape == (2, 2, int(0.4 * SR)) and generated["mixture"].shape == (2, int(0.4 * SR))
    assert np.array_equal(generated["mixture"], pipeline.generate(n=2, seconds=0.4, seed=3, steps=2)["mixture"])
    wave = np.random.default_rng(0).normal(size=SR).astype(np.float32) * 0.1
    varied = pipeline.vary(wave, SR, keep=[0], seed=1, steps=2, n=2)
    assert torch.equal(varied["z"][:, 0], varied["original_z"][:, 0].expand(2, -1, -1))
    assert not torch.equal(varied["z"][0, 1], varied["z"][1, 1])  # regenerated parts differ between variations
    with pytest.raises(ValueError, match="nothing to vary"):
        pipeline.vary(wave, SR, keep=[0, 1])
    with pytest.raises(ValueError, match="seconds"):
        pipeline.generate(seconds=1000)
    mixed = Pipeline.from_checkpoint(decomposer_uri).recompose([(wave, SR), (wave[::-1].copy(), SR)],
                                                               {0: 0, 1: 1}, steps=2)
    assert mixed["components"].shape == (1, 2, SR)
    with pytest.raises(ValueError, match="no prior"):
        Pipeline.from_checkpoint(decomposer_uri).generate()


def test_generation_report(prior_run, train_cache, tmp_path):  # noqa: F811
    from ucr.generation import evaluate_generation

    report = evaluate_generation(Pipeline.from_checkpoint(prior_run[0]), train_cache, str(tmp_path / "gen"), n=2,
                                 seconds=0.4, steps=2, max_features=200, variation_chunks=1, variation_seeds=2)
    rows = report["mixture_latent_frames"]
    assert set(rows) == {"real (held-out half)", "generated", "noise baseline"}
    assert set(report["component_patches"]) == {"real (held-out half)", "generated", "shuffled components",
                                                "noise baseline"}
    assert all(np.isfinite(r["frechet"]) and r["frechet"] >= 0 for r in rows.values())
    assert report["consistency_si_sdr"]["n"] == 2 * 2
    assert (tmp_path / "gen" / "generation_report.md").read_text().startswith("# Generation report")
