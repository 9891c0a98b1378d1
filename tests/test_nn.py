"""Network modules: shapes on random lengths, input checks, conditioning, gradient flow, a tiny overfit."""

import random
import time

import pytest
import torch
import torch.nn.functional as F

from ucr.nn import ComponentEncoders, NoiseLevelEmbedding, SinusoidalEmbedding, UNet1d, count_parameters


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- embeddings
def test_sinusoidal_embedding_values_and_shape():
    emb = SinusoidalEmbedding(16)
    out = emb(torch.tensor([0.0, 0.5, 1.0]))
    assert out.shape == (3, 16)
    torch.testing.assert_close(out[0], torch.cat([torch.zeros(8), torch.ones(8)]))  # alpha = 0: sin 0, cos 1
    torch.testing.assert_close(out[2, 0], torch.tensor(1000.0).sin())  # alpha scaled x1000, first frequency 1
    assert not torch.allclose(out[1], out[2])
    with pytest.raises(ValueError):
        SinusoidalEmbedding(15)
    with pytest.raises(ValueError):
        emb(torch.zeros(3, 1))


def test_noise_level_embedding_shape():
    assert NoiseLevelEmbedding(32)(torch.rand(5)).shape == (5, 32)


# ---------------------------------------------------------------------------------------------- UNet1d
CONFIGS = [
    dict(channels=(8, 16, 16), attention_levels=(2,), attention_heads=2, cond_channels=1),
    dict(channels=(8, 16), blocks_per_level=2, attention_levels=(0, 1), attention_heads=4, cond_channels=3),
    dict(channels=(16,), attention_levels=(0,), cond_channels=2),  # one level: no resampling
    dict(channels=(8, 8, 16, 16), attention_levels=(), cond_channels=0),
]


def _small_unet(in_channels=4, out_channels=3, **overrides) -> UNet1d:
    kwargs = dict(embedding_dim=16, dropout=0.0, groups=4)
    kwargs.update(overrides)
    return UNet1d(in_channels, out_channels, **kwargs).eval()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"ch{len(c['channels'])}-cond{c['cond_channels']}")
def test_unet_shapes_on_random_lengths(config):
    net = _small_unet(**config)
    factor = 2 ** (len(config["channels"]) - 1)
    assert net.downsample_factor == factor
    rng = random.Random(len(config["channels"]))
    for _ in range(3):
        B, T = rng.randint(1, 3), factor * rng.randint(1, 12)
        cond = torch.randn(B, config["cond_channels"], T) if config["cond_channels"] else None
        out = net(torch.randn(B, 4, T), torch.rand(B), cond)
        assert out.shape == (B, 3, T)
        assert torch.isfinite(out).all()


def test_unet_rejects_bad_inputs():
    net = _small_unet(channels=(8, 16, 16), attention_levels=(), cond_channels=1)
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.randn(2, 4, 10), torch.rand(2), torch.randn(2, 1, 10))
    with pytest.raises(ValueError, match=r"\[B, 4, T\]"):
        net(torch.randn(4, 16), torch.rand(2), torch.randn(2, 1, 16))
    with pytest.raises(ValueError, match="alpha"):
        net(torch.randn(2, 4, 16), torch.rand(3), torch.randn(2, 1, 16))
    with pytest.raises(ValueError, match="cond"):
        net(torch.randn(2, 4, 16), torch.rand(2), None)
    with pytest.raises(ValueError, match="cond"):
        net(torch.randn(2, 4, 16), torch.rand(2), torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="cond_channels = 0"):
        _small_unet(channels=(8,), attention_levels=(), cond_channels=0)(torch.randn(1, 4, 8), torch.rand(1), torch.randn(1, 1, 8))
    with pytest.raises(ValueError, match="divisible by groups"):
        UNet1d(4, 4, channels=(8, 12), groups=8)
    with pytest.raises(ValueError, match="attention_levels"):
        UNet1d(4, 4, channels=(8, 16), attention_levels=(2,))


def test_condition_and_noise_level_change_the_output():
    torch.manual_seed(0)
    net = _small_unet(channels=(8, 16, 16), attention_levels=(2,), cond_channels=1)
    x, alpha = torch.randn(2, 4, 32), torch.rand(2)
    cond_a, cond_b = torch.randn(2, 1, 32), torch.randn(2, 1, 32)
    out_a = net(x, alpha, cond_a)
    assert (out_a - net(x, alpha, cond_b)).abs().max() > 1e-4
    assert (out_a - net(x, 1 - alpha, cond_a)).abs().max() > 1e-4
    # examples are processed independently (GroupNorm is per example): batch of 2 == two batches of 1
    torch.testing.assert_close(out_a[1:], net(x[1:], alpha[1:], cond_a[1:]), atol=1e-5, rtol=1e-4)


def test_gradient_reaches_condition_and_noise_embedding():
    torch.manual_seed(0)
    net = _small_unet(channels=(8, 16, 16), attention_levels=(2,), cond_channels=2).train()
    x = torch.randn(2, 4, 16)
    alpha = torch.rand(2, requires_grad=True)
    cond = torch.randn(2, 2, 16, requires_grad=True)
    net(x, alpha, cond).square().mean().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    for p in net.embed.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters()), "some parameters are not used"


def test_tiny_unet_overfits_fixed_pairs():
    torch.manual_seed(0)
    net = _small_unet(channels=(16, 16), attention_levels=(1,), cond_channels=1).train()
    x, alpha, cond = torch.randn(4, 4, 16), torch.rand(4), torch.randn(4, 1, 16)
    target = torch.randn(4, 3, 16)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    start = time.perf_counter()
    first = None
    for _ in range(150):
        loss = F.mse_loss(net(x, alpha, cond), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = loss.item() if first is None else first
    assert loss.item() < first / 10, (first, loss.item())
    assert time.perf_counter() - start < 10


def test_paper_sizes_parameter_counts():
    decoder = UNet1d(128, 128, channels=(128, 128, 256, 256, 512), attention_levels=(4,), embedding_dim=128,
                     cond_channels=1)
    assert count_parameters(decoder) == sum(p.numel() for p in decoder.parameters())
    assert 0.6 * 10.5e6 < count_parameters(decoder) < 1.4 * 10.5e6  # the paper's figure: ~10.5 M
    decoder.requires_grad_(False)
    assert count_parameters(decoder) == 0 and count_parameters(decoder, trainable_only=False) > 0


# ---------------------------------------------------------------------------------------------- encoders
def _reference_stack(encoders: ComponentEncoders, k: int, x: torch.Tensor) -> torch.Tensor:
    """Component k's encoder run on its own, with weights sliced out of the grouped layers: ``[B, C_out, T]``."""
    h = x
    for i, layer in enumerate(encoders.layers):
        width = layer.out_channels // encoders.n_components
        rows = slice(k * width, (k + 1) * width)
        h = F.conv1d(h, layer.weight[rows], layer.bias[rows], padding=1)
        if i < len(encoders.layers) - 1:
            h = F.silu(h)
    return h


@pytest.mark.parametrize("hidden", [(16, 24), (8,), ()])
def test_component_encoders_equal_separate_stacks(hidden):
    encoders = ComponentEncoders(6, n_components=3, hidden=hidden, out_channels=2)
    x = torch.randn(2, 6, 20, generator=_gen(0))
    z = encoders(x)
    assert z.shape == (2, 3, 2, 20)
    assert len(encoders.layers) == len(hidden) + 1
    for k in range(3):
        torch.testing.assert_close(z[:, k], _reference_stack(encoders, k, x), atol=1e-5, rtol=1e-5)


def test_component_encoders_are_unshared():
    encoders = ComponentEncoders(5, n_components=3, hidden=(8, 8), out_channels=1)
    x = torch.randn(2, 5, 12, generator=_gen(1))
    before = encoders(x)
    with torch.no_grad():
        for layer in encoders.layers:  # perturb every weight of component 1 only
            width = layer.out_channels // 3
            layer.weight[width:2 * width] += 0.5 * torch.randn_like(layer.weight[width:2 * width])
    after = encoders(x)
    assert torch.equal(before[:, 0], after[:, 0]) and torch.equal(before[:, 2], after[:, 2])
    assert (before[:, 1] - after[:, 1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"\[B, 5, T\]"):
        encoders(torch.randn(2, 4, 12))


def test_paper_encoder_parameter_count():
    encoders = ComponentEncoders(128, n_components=2, hidden=(256, 512), out_channels=1)
    per_encoder = (128 * 256 * 3 + 256) + (256 * 512 * 3 + 512) + (512 * 1 * 3 + 1)
    assert count_parameters(encoders) == 2 * per_encoder
