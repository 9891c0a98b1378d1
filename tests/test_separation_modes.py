"""The one-pass separation modes, the blind residual rule and the decomposition diagnostics."""

import numpy as np
import pytest
import torch

from ucr.config import load_config
from ucr.decomposer import (build_decomposer, coherence_with_mixture, component_correlation, one_pass_noise,
                            replace_with_residual)
from ucr.diffusion import iadb
from ucr.evaluate import z_correlation


def tiny_model(k: int = 2, channels: int = 8):
    return build_decomposer(load_config("smoke", {"model.n_components": k}).model, latent_channels=channels).eval()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_pass_modes_shapes_and_exact_composition(k):
    model = tiny_model(k)
    mixture = torch.randn(3, 8, 21)  # T not a multiple of the U-Net's stride: padded internally
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    free = model.separate(mixture, generator=gen(), mode="one_pass", alpha=0.3, draws=2)
    assert free.shape == (3, k, 8, 21)
    parts = model.separate(mixture, generator=gen(), mode="one_pass_residual", alpha=0.3, draws=2)
    assert parts.shape == (3, k, 8, 21)
    torch.testing.assert_close(parts.mean(1), mixture, atol=1e-5, rtol=1e-5)  # exact composition, any K
    if k > 1:  # K - 1 components are the one-pass ones, each rescaled by one gain per example
        cosine = torch.nn.functional.cosine_similarity(parts.flatten(2), free.flatten(2), dim=-1)  # [B, K]
        assert int((cosine.abs() > 1 - 1e-5).all(dim=0).sum()) == k - 1
    else:
        torch.testing.assert_close(parts[:, 0], mixture, atol=1e-5, rtol=1e-5)


def test_one_pass_is_the_decoder_on_its_training_input():
    model = tiny_model(2)
    x = torch.randn(2, 8, 16)
    z = model.components(x)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    alpha = torch.full((2,), 0.4)
    expected = model.denoise_each(iadb.blend(x, noise, alpha), alpha, z)
    got = model.one_pass(x, z, 0.4, draws=1, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="alpha"):
        model.one_pass(x, z, 1.5)
    with pytest.raises(ValueError, match="draws"):
        model.one_pass(x, z, 0.3, draws=0)


def test_one_pass_draws_come_in_antithetic_pairs():
    noises = one_pass_noise((2, 8, 16), 5, torch.Generator().manual_seed(3))
    assert len(noises) == 5
    for first, second in ((0, 1), (2, 3)):
        torch.testing.assert_close(noises[second], -noises[first], rtol=0, atol=0)
    assert not torch.allclose(noises[2], noises[0]) and not torch.allclose(noises[4], noises[2])
    first = torch.randn((2, 8, 16), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noises[0], first, rtol=0, atol=0)  # the first draw is the generator's first
    # one_pass averages the decoder over the pair: mean(decoder(eps), decoder(-eps))
    model = tiny_model(2)
    x = torch.randn(2, 8, 16)
    z = model.components(x)
    alpha = torch.full((2,), 0.3)
    expected = 0.5 * (model.denoise_each(iadb.blend(x, first, alpha), alpha, z)
                      + model.denoise_each(iadb.blend(x, -first, alpha), alpha, z))
    got = model.one_pass(x, z, 0.3, draws=2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected)


def test_separate_many_decides_the_residual_once_for_all_excerpts():
    model = tiny_model(2)
    mixtures = torch.randn(5, 8, 16)
    parts = model.separate_many(mixtures, max_batch=2, generator=torch.Generator().manual_seed(1),
                                mode="one_pass_residual", alpha=0.3, draws=1)
    free = model.separate_many(mixtures, max_batch=2, generator=torch.Generator().manual_seed(1), mode="one_pass",
                               alpha=0.3, draws=1)
    torch.testing.assert_close(parts.mean(1), mixtures, atol=1e-5, rtol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(parts.flatten(2), free.flatten(2), dim=-1)  # [N, K]
    kept = (cosine.abs() > 1 - 1e-5).all(dim=0)  # a kept component is its one-pass self, rescaled, in every excerpt
    assert sorted(kept.tolist()) == [False, True]  # the same component replaced in every excerpt
    # residual_gain "unit": the kept component is its one-pass self exactly, the replaced one the exact residual
    unit = model.separate_many(mixtures, max_batch=2, generator=torch.Generator().manual_seed(1),
                               mode="one_pass_residual", alpha=0.3, draws=1, residual_gain="unit")
    k = int(kept.nonzero()[0])
    torch.testing.assert_close(unit[:, k], free[:, k])
    torch.testing.assert_close(unit[:, 1 - k], 2 * mixtures - free[:, k], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="residual_gain"):
        model.separate_many(mixtures, mode="one_pass_residual", residual_gain="loud")


def test_blind_rule_drops_the_incoherent_component():
    """A constructed case with a known answer: component 0 is one source, component 1 is noise."""
    g = torch.Generator().manual_seed(0)
    s0, s1 = torch.randn(4, 8, 50, generator=g), torch.randn(4, 8, 50, generator=g)
    mixture = (s0 + s1) / 2
    parts = torch.stack([s0, torch.randn(4, 8, 50, generator=g)], dim=1)  # [B, K, C, T]
    trust = coherence_with_mixture(parts, mixture)
    assert trust.shape == (4, 2) and bool((trust[:, 0] > trust[:, 1]).all())
    # closed form: s0 has projection 1/2 (s0.m = |s0|^2/2, |m|^2 = |s0|^2/2 approx) -> SI-SDR near 0 dB
    assert float(trust[:, 0].mean()) == pytest.approx(0.0, abs=0.6)
    fixed = replace_with_residual(parts, mixture, trust.mean(0), fit_gains=False)
    torch.testing.assert_close(fixed[:, 0], s0)
    torch.testing.assert_close(fixed[:, 1], s1, atol=1e-5, rtol=1e-5)  # the residual is exactly the other source


def test_fitted_gains_undo_a_shrunk_estimate():
    """Closed form: the kept component is the first source shrunk by 0.3 (plus nothing else); the sources are
    orthogonal, so the least-squares gain restores it exactly and the residual is exactly the other source."""
    g = torch.Generator().manual_seed(1)
    s0, s1 = torch.randn(3, 4, 32, generator=g), torch.randn(3, 4, 32, generator=g)
    s1 = s1 - (s1 * s0).sum((1, 2), keepdim=True) / s0.square().sum((1, 2), keepdim=True) * s0  # s1 ⟂ s0
    mixture = (s0 + s1) / 2  # mean composition: K * mixture = s0 + s1
    parts = torch.stack([0.3 * s0, torch.randn(3, 4, 32, generator=g)], dim=1)
    fitted = replace_with_residual(parts, mixture, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(fitted[:, 0], s0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fitted[:, 1], s1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fitted.mean(1), mixture, atol=1e-6, rtol=1e-5)
    unfitted = replace_with_residual(parts, mixture, torch.tensor([1.0, 0.0]), fit_gains=False)
    torch.testing.assert_close(unfitted[:, 1], s1 + 0.7 * s0, atol=1e-5, rtol=1e-5)  # keeps what was lost
    silent = replace_with_residual(torch.zeros(1, 3, 2, 4), torch.ones(1, 2, 4), torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(silent[:, 2], torch.full((1, 2, 4), 3.0))  # silent kept parts: gain 1, no NaN


def test_replace_with_residual_per_example_and_bad_trust():
    parts = torch.zeros(2, 3, 1, 2)
    parts[:, 0] = 1.0
    mixture = torch.ones(2, 1, 2)
    out = replace_with_residual(parts, mixture, torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]), fit_gains=False)
    torch.testing.assert_close(out[0, 2], torch.full((1, 2), 2.0))  # 3 * 1 - (1 + 0)
    torch.testing.assert_close(out[1, 0], torch.full((1, 2), 3.0))  # 3 * 1 - (0 + 0)
    with pytest.raises(ValueError, match="trust"):
        replace_with_residual(parts, mixture, torch.zeros(4))


def test_z_correlation_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 1, 1, 40, generator=g)
    b = torch.randn(6, 1, 1, 40, generator=g)
    z = torch.cat([a, -2 * a + 1, b], dim=1)  # z1 an affine, negated copy of z0; z2 independent
    r = z_correlation(z)
    assert r.shape == (3, 3)
    assert r[0, 1] == pytest.approx(-1.0, abs=1e-9)
    assert abs(r[0, 2]) < 0.2
    np.testing.assert_allclose(np.diag(r), 1.0)


def test_config_accepts_the_new_modes_and_rejects_bad_settings():
    config = load_config("smoke", {"diffusion.separation": "one_pass_residual", "diffusion.one_pass_alpha": 0.2})
    assert config.diffusion.separation == "one_pass_residual"
    with pytest.raises(ValueError, match="diffusion.separation"):
        load_config("smoke", {"diffusion.separation": "magic"})
    with pytest.raises(ValueError, match="one_pass_alpha"):
        load_config("smoke", {"diffusion.one_pass_alpha": 1.5})
    with pytest.raises(ValueError, match="one_pass_draws"):
        load_config("smoke", {"diffusion.one_pass_draws": 0})


def _changes_the_loss(overrides: dict):
    """A smoke decomposer built with ``overrides``, after checking that its loss differs from the paper's settings'
    on the same weights, batch and generator seed (so the setting reaches the training draw)."""
    changed = build_decomposer(load_config("smoke", overrides).model, latent_channels=8)
    paper = build_decomposer(load_config("smoke").model, latent_channels=8)
    paper.load_state_dict(changed.state_dict())
    mixture = torch.randn(2, 8, 16)
    assert not torch.allclose(changed.loss(mixture, torch.Generator().manual_seed(3)),
                              paper.loss(mixture, torch.Generator().manual_seed(3)))
    return changed


def test_train_alpha_max_bounds_the_training_draws():
    alphas = iadb.sample_alpha(20000, generator=torch.Generator().manual_seed(0), high=0.4)
    assert alphas.max().item() < 0.4 and abs(alphas.mean().item() - 0.2) < 0.005  # U(0, 0.4): mean 0.2
    with pytest.raises(ValueError, match="upper bound"):
        iadb.sample_alpha(4, high=0.0)
    # the loss uses the bound: the same generator seed draws alpha scaled by 0.5, so the blended input differs
    assert _changes_the_loss({"model.train_alpha_max": 0.5}).train_alpha_max == 0.5
    with pytest.raises(ValueError, match="train_alpha_max"):
        load_config("smoke", {"model.train_alpha_max": 0.0})
    with pytest.raises(ValueError, match="train_alpha_max"):
        load_config("smoke", {"model.train_alpha_max": 1.2})


def test_train_alpha_power_favours_low_alpha_over_the_whole_range():
    # alpha = u ** p, u ~ U(0, 1): E[alpha] = 1 / (p + 1), P(alpha < 1/2) = 2 ** (-1 / p), and the range stays [0, 1)
    alphas = iadb.sample_alpha(40000, generator=torch.Generator().manual_seed(0), power=2.0)
    assert abs(alphas.mean().item() - 1 / 3) < 0.005
    assert abs((alphas < 0.5).float().mean().item() - 2 ** -0.5) < 0.01
    assert alphas.max().item() > 0.95  # unlike train_alpha_max, the sampler's whole range is still trained
    scaled = iadb.sample_alpha(40000, generator=torch.Generator().manual_seed(0), high=0.5, power=3.0)
    assert abs(scaled.mean().item() - 0.5 / 4) < 0.003
    with pytest.raises(ValueError, match="power"):
        iadb.sample_alpha(4, power=0.0)
    assert _changes_the_loss({"model.train_alpha_power": 2.0}).train_alpha_power == 2.0
    with pytest.raises(ValueError, match="train_alpha_power"):
        load_config("smoke", {"model.train_alpha_power": 0.0})


def test_component_correlation_against_closed_forms():
    t = torch.linspace(0, 6.28, 64)
    base = torch.sin(t)
    other = torch.cos(t * 2)  # centred and orthogonal to base over whole periods
    other = other - other.mean()
    base = base - base.mean()
    other = other * base.norm() / other.norm()  # equal norms: corr(base, base + other) = 1 / sqrt(2)
    z = torch.stack([torch.stack([base, 3 * base + 1]),  # affine copy: r = 1
                     torch.stack([base, -base]),  # r = -1 -> squared 1
                     torch.stack([base, other]),  # r = 0
                     torch.stack([base, base + other])])[:, :, None]  # [4, 2, 1, 64]
    got = component_correlation(z)
    torch.testing.assert_close(got, torch.tensor([1.0, 1.0, 0.0, 0.5]), atol=2e-3, rtol=0)
    assert torch.equal(component_correlation(torch.randn(3, 1, 2, 16)), torch.zeros(3))  # K = 1: nothing to penalise
    # K = 3: the mean over the three pairs (r = 1 for the copy pair, 0 for the two pairs with the orthogonal one)
    three = torch.stack([base, 2 * base, other])[None, :, None]
    torch.testing.assert_close(component_correlation(three), torch.tensor([1 / 3]), atol=2e-3, rtol=0)


def test_z_decorrelation_adds_the_weighted_penalty_to_the_loss():
    mixture = torch.randn(2, 8, 16)
    paper = build_decomposer(load_config("smoke").model, latent_channels=8)
    penalised = build_decomposer(load_config("smoke", {"model.z_decorrelation": 2.0}).model, latent_channels=8)
    penalised.load_state_dict(paper.state_dict())
    paper.eval(), penalised.eval()  # no dropout: the two losses differ by the penalty only
    base = paper.loss(mixture, torch.Generator().manual_seed(3))
    with_penalty = penalised.loss(mixture, torch.Generator().manual_seed(3))
    expected = 2.0 * component_correlation(paper.components(paper.normalize(mixture)))
    assert expected.min() > 0
    torch.testing.assert_close(with_penalty - base, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="z_decorrelation"):
        load_config("smoke", {"model.z_decorrelation": -1.0})


def test_loss_channel_power_weights_channels_by_their_variance():
    """p = 1: the x0 loss is the raw-latent MSE (channel c weighted by var_c, weights of mean 1); p = 0: the paper."""
    from ucr.codec.stats import LatentStats

    stats = LatentStats(mean=[0.0] * 8, std=[1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0, 3.0])
    paper = build_decomposer(load_config("smoke").model, latent_channels=8, stats=stats).eval()
    weighted = build_decomposer(load_config("smoke", {"model.loss_channel_power": 1.0}).model, latent_channels=8,
                                stats=stats).eval()
    weighted.load_state_dict(paper.state_dict())
    mixture = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(4)
    x = paper.normalize(mixture)
    x_alpha, alpha, _ = iadb.training_inputs(x, generator)
    squared = (paper.compose(paper.denoise_each(x_alpha, alpha, paper.components(x))) - x).square()  # [2, 8, 16]
    variance = torch.tensor(stats.std) ** 2
    expected = (squared * variance[:, None]).sum(dim=(1, 2)) / (variance.sum() * 16)
    torch.testing.assert_close(weighted.loss(mixture, torch.Generator().manual_seed(4)), expected)
    torch.testing.assert_close(paper.loss(mixture, torch.Generator().manual_seed(4)), squared.mean(dim=(1, 2)))
    assert paper.channel_loss_weights(2) is None
    # the supervised reference weighs its channels the same way (K = 2 targets, each [8, 16])
    sources = torch.randn(2, 2, 8, 16, generator=torch.Generator().manual_seed(1))
    x = paper.normalize(sources.mean(1))
    x_alpha, alpha, _ = iadb.training_inputs(x, torch.Generator().manual_seed(4))
    squared = (paper.denoise_each(x_alpha, alpha, paper.components(x)) - paper.normalize(sources)).square()
    expected = (squared * variance[:, None]).sum(dim=(1, 2, 3)) / (variance.sum() * 16 * 2)
    torch.testing.assert_close(weighted(sources.mean(1), sources, torch.Generator().manual_seed(4)), expected)
    torch.testing.assert_close(paper(sources.mean(1), sources, torch.Generator().manual_seed(4)),
                               squared.mean(dim=(1, 2, 3)))
    # a mix m keeps a uniform share: weight_c = (1 - m) + m * var_c / mean(var)
    mixed = build_decomposer(load_config("smoke", {"model.loss_channel_power": 1.0, "model.loss_channel_mix": 0.25})
                             .model, latent_channels=8, stats=stats)
    torch.testing.assert_close(mixed.channel_loss_weights(1)[0, :, 0], 0.75 + 0.25 * variance / variance.mean())
    with pytest.raises(ValueError, match="loss_channel_power"):
        load_config("smoke", {"model.loss_channel_power": -0.5})
    with pytest.raises(ValueError, match="loss_channel_mix"):
        load_config("smoke", {"model.loss_channel_mix": 1.5})


def test_part_decorrelation_adds_the_weighted_correlation_of_the_decoded_parts():
    """The penalty is mu * mean_{k<j} corr(part_k, part_j)^2 with each part scaled by sqrt(channel weight)."""
    from ucr.codec.stats import LatentStats
    from ucr.decomposer import component_correlation

    stats = LatentStats(mean=[0.0] * 8, std=[1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0, 3.0])
    overrides = {"model.loss_channel_power": 1.0}
    plain = build_decomposer(load_config("smoke", overrides).model, latent_channels=8, stats=stats).eval()
    penalised = build_decomposer(load_config("smoke", {**overrides, "model.part_decorrelation": 0.5}).model,
                                 latent_channels=8, stats=stats).eval()
    penalised.load_state_dict(plain.state_dict())
    mixture = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0))
    x = plain.normalize(mixture)
    x_alpha, alpha, _ = iadb.training_inputs(x, torch.Generator().manual_seed(4))
    parts = plain.denoise_each(x_alpha, alpha, plain.components(x))  # [2, K, 8, 16]
    scale = (torch.tensor(stats.std) ** 2 / (torch.tensor(stats.std) ** 2).mean()).sqrt()[:, None]
    expected = plain.loss(mixture, torch.Generator().manual_seed(4)) + 0.5 * component_correlation(parts * scale)
    torch.testing.assert_close(penalised.loss(mixture, torch.Generator().manual_seed(4)), expected)
    identical = torch.randn(1, 1, 8, 16).expand(1, 2, 8, 16)  # a redundant split costs the most
    torch.testing.assert_close(component_correlation(identical), torch.ones(1))
    with pytest.raises(ValueError, match="part_decorrelation"):
        load_config("smoke", {"model.part_decorrelation": -1.0})


def test_ablation_variants_keep_list_values_whole():
    from tests.benchmarks.ablate import parse_variant

    name, overrides = parse_variant("small:model.unet_channels=[64,128],model.attention_levels=[1],train.lr=1e-3")
    assert name == "small"
    assert overrides == ["model.unet_channels=[64,128]", "model.attention_levels=[1]", "train.lr=1e-3"]
    config = load_config("demo", overrides)
    assert config.model.unet_channels == (64, 128) and config.model.attention_levels == (1,)
    assert parse_variant("paper:") == ("paper", [])


def test_component_stride_holds_block_means_of_z():
    from ucr.decomposer import hold_block_means

    z = torch.tensor([[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]])
    # blocks of 3 frames: mean(0, 2, 4) = 2, mean(6, 8, 10) = 8, the short last block (12) = 12
    assert torch.equal(hold_block_means(z, 3), torch.tensor([[2.0, 2.0, 2.0, 8.0, 8.0, 8.0, 12.0]]))
    assert torch.equal(hold_block_means(z, 1), z)
    torch.manual_seed(0)
    paper = build_decomposer(load_config("smoke").model, latent_channels=8)
    coarse = build_decomposer(load_config("smoke", {"model.component_stride": 4}).model, latent_channels=8)
    coarse.load_state_dict(paper.state_dict())  # same weights: only the time resolution of z differs
    x = torch.randn(2, 8, 16)
    fine_z, coarse_z = paper.components(x), coarse.components(x)
    assert coarse_z.shape == fine_z.shape == (2, 2, 1, 16)
    assert torch.allclose(coarse_z, hold_block_means(fine_z, 4))
    assert torch.equal(coarse_z[..., 0:4], coarse_z[..., 0:1].expand(-1, -1, -1, 4))  # constant within a block
    assert not torch.allclose(fine_z[..., 0:4], fine_z[..., 0:1].expand(-1, -1, -1, 4))
    with pytest.raises(ValueError, match="model.component_stride"):
        load_config("smoke", {"model.component_stride": 0})


def test_global_normalisation_pools_the_channel_statistics():
    from ucr.codec.stats import LatentStats
    from ucr.train.tasks import normalization_stats

    torch.manual_seed(0)
    latents = torch.stack([torch.randn(4, 5000) * 1.0 + 1.0, torch.randn(4, 5000) * 3.0 - 2.0], dim=1)  # [4, 2, T]
    per_channel = LatentStats.from_latents([latents])
    pooled = per_channel.pooled()
    everything = latents.double().flatten()
    assert pooled.mean == pytest.approx((float(everything.mean()),) * 2, abs=1e-9)
    assert pooled.std == pytest.approx((float(everything.std(unbiased=False)),) * 2, rel=1e-9)
    cfg = load_config("smoke", {"codec.normalize_latents": True})
    assert normalization_stats(per_channel, cfg.codec) is per_channel
    glob = load_config("smoke", {"codec.normalize_latents": True, "codec.normalize_scope": "global"})
    assert normalization_stats(per_channel, glob.codec) == pooled
    assert normalization_stats(per_channel, load_config("smoke", {"codec.normalize_latents": False}).codec) is None
    with pytest.raises(ValueError, match="codec.normalize_scope"):
        load_config("smoke", {"codec.normalize_scope": "layer"})


def test_per_component_strides_coarsen_only_their_component():
    from ucr.decomposer import hold_block_means

    torch.manual_seed(0)
    paper = build_decomposer(load_config("smoke").model, latent_channels=8)
    mixed = build_decomposer(load_config("smoke", {"model.component_strides": [1, 4]}).model, latent_channels=8)
    mixed.load_state_dict(paper.state_dict())
    x = torch.randn(2, 8, 16)
    fine, z = paper.components(x), mixed.components(x)
    assert torch.equal(z[:, 0], fine[:, 0])  # stride 1: untouched
    assert torch.allclose(z[:, 1], hold_block_means(fine[:, 1], 4))
    with pytest.raises(ValueError, match="one stride per component"):
        load_config("smoke", {"model.component_strides": [1, 2, 4]})


@pytest.mark.parametrize("k", [2, 3])
def test_remix_targets_are_the_models_own_components_moved_across_the_batch(k):
    model = tiny_model(k)
    x = torch.randn(6, 8, 16)
    remixed, targets = model.remix_targets(x, torch.Generator().manual_seed(4))
    assert remixed.shape == (6, 8, 16) and targets.shape == (6, k, 8, 16)
    torch.testing.assert_close(targets.mean(1), remixed)  # the composition operator makes the new mixtures
    # the same separation, done by hand: one pass (the generator's first draw), the blind residual rule
    gen = torch.Generator().manual_seed(4)
    parts = model.denormalize(model.one_pass(x, model.components(x), model.remix_alpha, 1, gen))
    mixture = model.denormalize(x)
    parts = model.normalize(replace_with_residual(parts, mixture, coherence_with_mixture(parts, mixture).mean(0),
                                                  fit_gains=False))
    torch.testing.assert_close(targets[:, 0], parts[:, 0])  # component 0 stays with its example
    for j in range(1, k):  # every other component comes from some example of the batch, each example once
        sources = [int(torch.stack([(targets[b, j] - parts[e, j]).abs().max() for e in range(6)]).argmin())
                   for b in range(6)]
        assert sorted(sources) == list(range(6))
        torch.testing.assert_close(targets[:, j], parts[sources, j])


def test_remix_weight_adds_the_weighted_remix_loss():
    mixture = torch.randn(4, 8, 16)
    paper = build_decomposer(load_config("smoke").model, latent_channels=8).eval()
    remix = build_decomposer(load_config("smoke", {"model.remix_weight": 0.5}).model, latent_channels=8).eval()
    remix.load_state_dict(paper.state_dict())
    base = paper.loss(mixture, torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    total = remix.loss(mixture, gen)
    # the paper's loss consumes the generator first, then the remix loss continues with it
    gen_again = torch.Generator().manual_seed(2)
    paper.loss(mixture, gen_again)
    expected = 0.5 * paper.remix_loss(paper.normalize(mixture), gen_again)
    assert expected.min() > 0
    torch.testing.assert_close(total - base, expected, atol=1e-5, rtol=1e-4)
    total.mean().backward()
    assert all(p.grad is not None for p in remix.encoders.parameters())  # z of the remixed mixtures is trained
    for bad in ({"model.remix_weight": -1.0}, {"model.remix_alpha": 1.5}):
        with pytest.raises(ValueError, match="remix"):
            load_config("smoke", bad)


def test_a_frozen_remix_teacher_makes_the_targets():
    model, teacher = tiny_model(2), tiny_model(2)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), teacher.state_dict().values()))
    x = torch.randn(4, 8, 16)
    by_teacher = teacher.remix_targets(x, torch.Generator().manual_seed(1))
    model.set_remix_teacher(teacher)
    got = model.remix_targets(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(got[1], by_teacher[1])
    assert not any(p.requires_grad for p in teacher.parameters())
    assert set(model.state_dict()) == set(tiny_model(2).state_dict())  # not saved with the model
    with pytest.raises(ValueError, match="remix_teacher"):
        load_config("smoke", {"model.remix_teacher": "ema"})


def test_shift_offsets_spread_over_one_frame():
    from ucr.pipeline import shift_offsets

    assert shift_offsets(640, 1) == [0]
    assert shift_offsets(640, 2) == [0, 320]
    assert shift_offsets(640, 4) == [0, 160, 320, 480]


def test_the_shift_trick_averages_framings_and_undoes_its_delays():
    """A separation that gates each frame's first half to component 0 and its second half to component 1: one
    framing gives a hard split, two framings half a frame apart average to [x/2, x/2] exactly; a separation that
    does not depend on the framing comes back unchanged for any lengths (delays undone, padding cut)."""
    from ucr.pipeline import average_over_shifts

    hop = 4
    gate = torch.tensor([1.0, 1.0, 0.0, 0.0])

    def framed(mixtures):  # [L'] -> [2, L'], L' a multiple of hop
        g = gate.repeat(mixtures[0].shape[-1] // hop)
        return [torch.stack([m * g, m * (1 - g)]) for m in mixtures]

    x = torch.randn(10)
    one = average_over_shifts(framed, [x], hop, 1)[0]
    torch.testing.assert_close(one[0], x * gate.repeat(3)[:10])
    torch.testing.assert_close(average_over_shifts(framed, [x], hop, 2)[0], torch.stack([x / 2, x / 2]))

    def split(mixtures):
        return [torch.stack([0.25 * m, 0.75 * m]) for m in mixtures]

    inputs = [torch.randn(9), torch.randn(13)]
    for shifts in (1, 3):
        for got, m in zip(average_over_shifts(split, inputs, hop, shifts), inputs):
            torch.testing.assert_close(got, torch.stack([0.25 * m, 0.75 * m]))
    with pytest.raises(ValueError, match="shifts must be a whole number"):
        average_over_shifts(split, inputs, hop, 0)
    with pytest.raises(ValueError, match="diffusion.shifts"):
        load_config("smoke", {"diffusion.shifts": 0})


def _codes_with_one_band_changed(model, channels: int):
    """The encoders' codes ``[B, K, Cz, T]`` of a random latent ``[2, channels, 16]`` (stft_mag at hop 640), of the
    same latent with only its channels below 250 Hz (0-13) changed, and with only those from 250 Hz up changed."""
    x = torch.randn(2, channels, 16)
    low, high = x.clone(), x.clone()
    low[:, :14] += torch.randn(2, 14, 16)
    high[:, 14:] += torch.randn(2, channels - 14, 16)
    with torch.no_grad():
        return model.encoders(x), model.encoders(low), model.encoders(high)


def test_component_bands_limit_what_each_encoder_reads():
    """With bands, z_0 ignores every latent channel below 250 Hz and z_1 every channel from 250 Hz up (stft_mag at hop
    640: channel c is c x 18.75 Hz, so channels 0-13 are below); the codec's channel frequencies follow its framing."""
    from ucr.codec import build_codec, channel_frequencies
    from ucr.config import CodecConfig
    from ucr.decomposer import build_decomposer

    for name in ("mdct", "stft_mag", "stft_if"):
        codec_config = CodecConfig(name=name, hop_length=640)
        assert len(channel_frequencies(codec_config)) == build_codec(codec_config).channels
    hz = channel_frequencies(CodecConfig(name="stft_mag", hop_length=640))
    assert hz[1] == 18.75 and hz[13] < 250 <= hz[14]
    assert channel_frequencies(CodecConfig(name="mdct", hop_length=320))[0] == 37.5 / 2
    assert channel_frequencies(CodecConfig(name="encodec")) is None

    config = load_config("smoke", {"model.component_bands": [[250, 12000], [0, 250]]}).model
    model = build_decomposer(config, len(hz), channel_hz=hz).eval()
    z, z_low, z_high = _codes_with_one_band_changed(model, len(hz))  # [B, K, 1, T]
    torch.testing.assert_close(z_low[:, 0], z[:, 0])
    torch.testing.assert_close(z_high[:, 1], z[:, 1])
    assert (z_low[:, 1] - z[:, 1]).abs().max() > 1e-4 and (z_high[:, 0] - z[:, 0]).abs().max() > 1e-4
    assert "first_layer_mask" not in model.state_dict()  # rebuilt from the config: checkpoints keep their keys

    with pytest.raises(ValueError, match="one \\[low_hz, high_hz\\] per component"):
        load_config("smoke", {"model.component_bands": [[0, 250]]})
    with pytest.raises(ValueError, match="0 <= low < high"):
        load_config("smoke", {"model.component_bands": [[300, 250], [0, 250]]})
    with pytest.raises(ValueError, match="channels are frequencies"):
        build_decomposer(config, 128, channel_hz=None)
    with pytest.raises(ValueError, match="no latent channel lies in"):
        build_decomposer(load_config("smoke", {"model.component_bands": [[1, 2], [0, 250]]}).model, len(hz),
                         channel_hz=hz)


def test_chorales_preset_bands_hold_with_eight_channel_codes():
    """The `chorales` preset (8 channels per code, a band per encoder, both codes at the full frame rate): z is
    [B, 2, 8, T], and each code still ignores the other band's channels in all 8 of its channels."""
    from ucr.codec import build_codec, channel_frequencies
    from ucr.decomposer import build_decomposer

    config = load_config("chorales")
    hz = channel_frequencies(config.codec)
    assert len(hz) == build_codec(config.codec).channels == 641
    model = build_decomposer(config.model, len(hz), channel_hz=hz).eval()
    z, z_low, z_high = _codes_with_one_band_changed(model, len(hz))
    assert z.shape == (2, 2, 8, 16)
    torch.testing.assert_close(z_low[:, 0], z[:, 0])
    torch.testing.assert_close(z_high[:, 1], z[:, 1])
    assert (z_low[:, 1] - z[:, 1]).abs().amax(dim=(0, 2)).min() > 1e-4  # every channel of z_1 reads the low band
    assert (z_high[:, 0] - z[:, 0]).abs().amax(dim=(0, 2)).min() > 1e-4
