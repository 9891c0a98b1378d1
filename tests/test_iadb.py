"""IADB maths: blending, loss, and the deterministic sampler against closed forms."""

import pytest
import torch

from ucr.diffusion import append_dims, blend, hold_known, sample, sample_alpha, training_inputs, x0_loss


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_append_dims_shapes_and_errors():
    v = torch.arange(3.0)
    assert append_dims(v, 4).shape == (3, 1, 1, 1)
    assert append_dims(v, 1).shape == (3,)
    with pytest.raises(ValueError, match="batch"):
        append_dims(v, 3, batch=4)
    with pytest.raises(ValueError, match="vector"):
        append_dims(v[:, None], 3)


def test_blend_endpoints_and_midpoint():
    x0, noise = torch.randn(4, 3, 8, generator=_gen(1)), torch.randn(4, 3, 8, generator=_gen(2))
    assert torch.equal(blend(x0, noise, torch.ones(4)), x0)
    assert torch.equal(blend(x0, noise, torch.zeros(4)), noise)
    alpha = torch.tensor([0.0, 0.25, 0.5, 1.0])
    mixed = blend(x0, noise, alpha)
    torch.testing.assert_close(mixed[1], 0.25 * x0[1] + 0.75 * noise[1])
    with pytest.raises(ValueError):
        blend(x0, noise, torch.ones(3))  # batch mismatch must not broadcast
    with pytest.raises(ValueError):
        blend(x0, noise[:, :2], torch.ones(4))


def test_training_inputs_are_consistent_and_reproducible():
    x0 = torch.randn(16, 2, 32, generator=_gen(3))
    x_alpha, alpha, noise = training_inputs(x0, generator=_gen(7))
    assert x_alpha.shape == x0.shape and alpha.shape == (16,) and noise.shape == x0.shape
    assert ((alpha >= 0) & (alpha <= 1)).all()
    torch.testing.assert_close(x_alpha, blend(x0, noise, alpha))
    again = training_inputs(x0, generator=_gen(7))
    assert all(torch.equal(a, b) for a, b in zip((x_alpha, alpha, noise), again))
    alphas = sample_alpha(20000, generator=_gen(0))
    assert abs(alphas.mean().item() - 0.5) < 0.01 and abs(alphas.var().item() - 1 / 12) < 0.003


def test_x0_loss_values():
    x0 = torch.randn(3, 2, 4, generator=_gen(0))
    assert torch.equal(x0_loss(x0.clone(), x0), torch.zeros(3))
    prediction = x0.clone()
    prediction[0] += 2.0  # every entry off by 2 -> MSE 4
    prediction[1, 1, :] += 1.0  # component 1 off by 1 -> MSE 8 * ... / 8 = 0.5 overall
    torch.testing.assert_close(x0_loss(prediction, x0), torch.tensor([4.0, 0.5, 0.0]))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])[:, :, None]  # [B, K, 1]
    # masked: example 0 only component 0 (MSE 4), example 1 only component 1 (MSE 1), example 2 nothing (0)
    torch.testing.assert_close(x0_loss(prediction, x0, weight_mask=mask), torch.tensor([4.0, 1.0, 0.0]))
    with pytest.raises(ValueError):
        x0_loss(prediction, x0, weight_mask=mask[:, :, 0])  # wrong rank


@pytest.mark.parametrize("steps", [1, 5, 50])
def test_perfect_denoiser_recovers_x0(steps):
    x0 = torch.randn(4, 3, 16, generator=_gen(11))
    calls = []

    def denoise(x, alpha):
        assert alpha.shape == (4,) and x.dtype == torch.float32
        calls.append(alpha[0].item())
        return x0

    out = sample(denoise, torch.randn(4, 3, 16, generator=_gen(12)), steps)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert len(calls) == steps and calls[0] == 0.0 and all(b > a for a, b in zip(calls, calls[1:]))


def test_gaussian_posterior_mean_denoiser_samples_the_data_distribution():
    m, s = 1.5, 0.5

    def denoise(x, alpha):  # exact E[x0 | x_alpha] for x0 ~ N(m, s^2), x_alpha = alpha x0 + (1 - alpha) eps
        a = append_dims(alpha, x.ndim).double()
        x = x.double()
        return (m + a * s**2 * (x - a * m) / (a**2 * s**2 + (1 - a) ** 2)).float()

    out = sample(denoise, torch.randn(20000, 1, generator=_gen(5)), steps=200)
    assert abs(out.mean().item() - m) < 0.02
    assert abs(out.std().item() - s) < 0.01


def test_known_entries_are_held_clean_and_returned_exactly():
    B, K, T = 3, 2, 8
    known = torch.randn(B, K, T, generator=_gen(1))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[:, :, None]  # [B, K, 1]
    seen = []

    def denoise(x, alpha):
        seen.append(x.clone())
        return torch.zeros_like(x)  # a denoiser that would destroy everything it can

    out = sample(denoise, torch.randn(B, K, T, generator=_gen(2)), steps=10, known=known, known_mask=mask)
    held = mask.bool().expand(B, K, T)
    assert torch.equal(out[held], known[held])
    assert torch.equal(out[~held], torch.zeros_like(out[~held]))
    for x in seen:  # the network sees the known components clean at every step
        assert torch.equal(x[held], known[held])
    torch.testing.assert_close(hold_known(torch.zeros(B, K, T), known, mask)[held], known[held])
    with pytest.raises(ValueError):
        sample(denoise, torch.randn(B, K, T), steps=2, known=known)  # mask missing


def test_custom_alpha_grid_and_bad_arguments():
    x0 = torch.randn(2, 1, 4, generator=_gen(0))
    grid = torch.tensor([0.0, 0.1, 0.5, 1.0])
    seen = []
    out = sample(lambda x, a: (seen.append(a[0].item()), x0)[1], torch.randn(2, 1, 4), steps=3, alpha_grid=grid)
    torch.testing.assert_close(out, x0)
    assert seen == pytest.approx([0.0, 0.1, 0.5])
    with pytest.raises(ValueError):
        sample(lambda x, a: x0, torch.randn(2, 1, 4), steps=2, alpha_grid=grid)
    with pytest.raises(ValueError):
        sample(lambda x, a: x0, torch.randn(2, 1, 4), steps=3, alpha_grid=torch.tensor([0.0, 0.5, 0.4, 1.0]))
    with pytest.raises(ValueError):
        sample(lambda x, a: x0, torch.randn(2, 1, 4), steps=0)
