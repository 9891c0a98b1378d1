"""Iterative alpha-(de)Blending (IADB; Heitz, Belcour and Chambon, SIGGRAPH 2023) with x0-prediction.

The one place for the diffusion maths. A clean sample ``x0`` and Gaussian noise ``eps`` are blended linearly::

    x_alpha = alpha * x0 + (1 - alpha) * eps,      alpha ~ U(0, 1),  eps ~ N(0, I)

so alpha = 0 is pure noise and alpha = 1 is data. As in the paper, the network predicts the clean sample
(``x0_hat = denoise(x_alpha, alpha)``) and is trained with MSE against ``x0``. The sampler walks alpha from 0 to 1
deterministically. The network never sees this module: callers wrap it in a ``denoise(x, alpha [B]) -> x0_hat``
closure (binding any condition), and this module wraps the closure.

Shapes: ``x0``, ``noise`` and ``x_alpha`` are ``[B, ...]`` (e.g. ``[B, C, T]`` or ``[B, K, C, T]``); ``alpha`` is
``[B]``; masks are ``[B, ...]`` of the same rank, broadcastable (e.g. ``[B, K, 1]`` over ``[B, K, T]``).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_alpha [B, ...], alpha [B]) -> x0_hat [B, ...]
StepListener = Callable[[int, int], None]  # (steps done, steps) after each sampler step
_step_listener: ContextVar[StepListener | None] = ContextVar("iadb_step_listener", default=None)


@contextmanager
def step_listener(listener: StepListener) -> Iterator[None]:
    """Inside this block every :func:`sample` call reports ``listener(done, steps)`` after each of its steps: how a
    progress bar follows samplers that run inside models (the maths itself does no I/O). Scoped to the current
    thread / task (a context variable), so concurrent requests do not see each other's listeners."""
    token = _step_listener.set(listener)
    try:
        yield
    finally:
        _step_listener.reset(token)


def append_dims(v: torch.Tensor, ndim: int, batch: int | None = None) -> torch.Tensor:
    """``v [B]`` -> ``[B, 1, ..., 1]`` with ``ndim`` dimensions in all.

    Raises instead of broadcasting silently: ``v`` must be a vector, ``ndim >= 1``, and ``len(v) == batch`` when
    ``batch`` is given.
    """
    if v.ndim != 1:
        raise ValueError(f"append_dims expects a vector [B], got shape {tuple(v.shape)}")
    if ndim < 1:
        raise ValueError(f"append_dims target rank must be >= 1, got {ndim}")
    if batch is not None and v.shape[0] != batch:
        raise ValueError(f"per-example values have batch {v.shape[0]} but the tensor has batch {batch}")
    return v.view(v.shape[0], *([1] * (ndim - 1)))


def blend(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``x_alpha = alpha * x0 + (1 - alpha) * noise``; ``x0, noise [B, ...]``, ``alpha [B]``."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
    a = append_dims(alpha, x0.ndim, batch=x0.shape[0]).to(x0.dtype)  # [B, 1, ..., 1]
    return a * x0 + (1 - a) * noise


def sample_alpha(batch: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, high: float = 1.0, power: float = 1.0) -> torch.Tensor:
    """``[B]`` blending factors ``alpha = high * u ** power`` with ``u ~ U(0, 1)``.

    ``high = 1, power = 1`` is the paper's training distribution (uniform). ``power > 1`` keeps the whole range
    [0, high) but favours low alpha (the mean is ``high / (power + 1)``; ``P(alpha < high / 2) = 0.5 ** (1 / power)``).
    """
    if not 0.0 < high <= 1.0:
        raise ValueError(f"the upper bound of alpha must be in (0, 1], got {high}")
    if not power > 0.0:
        raise ValueError(f"the power of the alpha draw must be > 0, got {power}")
    source = generator.device if generator is not None else device
    alpha = torch.rand(batch, generator=generator, device=source).pow(power) * high
    return alpha.to(device) if device is not None else alpha


def training_inputs(x0: torch.Tensor, generator: torch.Generator | None = None, alpha_max: float = 1.0,
                    alpha_power: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training draw for clean ``x0 [B, ...]``: returns ``(x_alpha [B, ...], alpha [B], noise [B, ...])``,
    with ``alpha = alpha_max * u ** alpha_power``, ``u ~ U(0, 1)`` (:func:`sample_alpha`).

    Random numbers are drawn on the generator's device and moved to ``x0``'s, so a CPU generator reproduces the same
    draw whatever device trains.
    """
    if x0.ndim < 2:
        raise ValueError(f"x0 must be [B, ...] with at least 2 dims, got shape {tuple(x0.shape)}")
    source = generator.device if generator is not None else x0.device
    alpha = sample_alpha(x0.shape[0], generator=generator, device=source, high=alpha_max,
                         power=alpha_power).to(x0.device)  # [B]
    noise = torch.randn(x0.shape, generator=generator, device=source, dtype=x0.dtype).to(x0.device)  # [B, ...]
    return blend(x0, noise, alpha), alpha, noise


def x0_loss(prediction: torch.Tensor, x0: torch.Tensor, weight_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example mean squared error ``[B]`` between the predicted and the true clean sample.

    Without a mask: the mean over all non-batch entries. With ``weight_mask [B, ...]`` (same rank, broadcastable,
    e.g. ``[B, K, 1]``; 1 = counted): the mean over masked entries only, 0 for an example with an empty mask.
    The training loop reduces over the batch.
    """
    if prediction.shape != x0.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and x0 {tuple(x0.shape)} must have the same shape")
    squared = (prediction - x0).square()  # [B, ...]
    if weight_mask is None:
        return squared.flatten(1).mean(dim=1)
    mask = _check_mask(weight_mask, x0, "weight_mask").to(squared.dtype).expand_as(squared)  # [B, ...]
    total = (squared * mask).flatten(1).sum(dim=1)  # [B]
    count = mask.flatten(1).sum(dim=1)  # [B]
    return torch.where(count > 0, total / count.clamp_min(torch.finfo(squared.dtype).tiny), torch.zeros_like(total))


def hold_known(x: torch.Tensor, known: torch.Tensor, known_mask: torch.Tensor) -> torch.Tensor:
    """``x`` with the entries where ``known_mask`` is set replaced by ``known`` (the masked prior's clean inputs)."""
    if known.shape != x.shape:
        raise ValueError(f"known {tuple(known.shape)} must have the shape of x {tuple(x.shape)}")
    mask = _check_mask(known_mask, x, "known_mask").bool()
    return torch.where(mask, known.to(x.dtype), x)


@torch.no_grad()
def sample(denoise: Denoiser, noise: torch.Tensor, steps: int, known: torch.Tensor | None = None,
           known_mask: torch.Tensor | None = None, alpha_grid: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic IADB sampler (Heitz et al. 2023, the sampling algorithm), x0-parameterised.

    Starting from ``x_0 = noise [B, ...]`` at alpha = 0, each step ``alpha -> alpha'`` on a uniform grid of ``steps``
    steps (or on ``alpha_grid``, increasing from 0 to 1, ``steps + 1`` points) does::

        x0_hat  = denoise(x_alpha, alpha [B])
        eps_hat = (x_alpha - alpha * x0_hat) / (1 - alpha)        # alpha < 1 before the last step
        x_alpha' = alpha' * x0_hat + (1 - alpha') * eps_hat        # = x_alpha + (alpha' - alpha)(x0_hat - eps_hat)

    and the last step (alpha' = 1) returns ``x0_hat``. The update arithmetic runs in float64; the network sees
    ``noise.dtype``. With ``known [B, ...]`` and ``known_mask`` (same rank, broadcastable, 1 = known; e.g.
    ``[B, K, 1]`` for the masked prior), known entries are held at their clean values in ``x_alpha`` at every step
    (they are given clean, never noised) and returned exactly.
    """
    if noise.ndim < 2:
        raise ValueError(f"noise must be [B, ...] with at least 2 dims, got shape {tuple(noise.shape)}")
    if (known is None) != (known_mask is None):
        raise ValueError("give both known and known_mask, or neither")
    B = noise.shape[0]
    grid = _alpha_grid(steps, alpha_grid)  # [steps + 1] float64 on CPU
    dtype = noise.dtype
    mask = None
    if known is not None:
        if known.shape != noise.shape:
            raise ValueError(f"known {tuple(known.shape)} must have the shape of noise {tuple(noise.shape)}")
        mask = _check_mask(known_mask, noise, "known_mask").bool()
        known = known.double()
    x = noise.double()  # x_alpha at alpha = 0
    if mask is not None:
        x = torch.where(mask, known, x)
    listener = _step_listener.get()
    for i in range(steps):
        a, a_next = grid[i].item(), grid[i + 1].item()
        alpha = torch.full((B,), a, dtype=dtype, device=noise.device)  # [B]
        x0_hat = denoise(x.to(dtype), alpha)
        if x0_hat.shape != noise.shape:
            raise ValueError(f"denoise returned shape {tuple(x0_hat.shape)}, expected {tuple(noise.shape)}")
        x0_hat = x0_hat.double()
        if mask is not None:
            x0_hat = torch.where(mask, known, x0_hat)
        if a_next >= 1.0:
            x = x0_hat
        else:
            eps_hat = (x - a * x0_hat) / (1.0 - a)
            x = a_next * x0_hat + (1.0 - a_next) * eps_hat
            if mask is not None:
                x = torch.where(mask, known, x)
        if listener is not None:
            listener(i + 1, steps)
        if a_next >= 1.0:
            break
    return x.to(dtype)


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _check_mask(mask: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """A mask must have ``like``'s rank and batch and broadcast to its shape."""
    if mask.ndim != like.ndim or mask.shape[0] != like.shape[0]:
        raise ValueError(f"{name} must be [B, ...] with the rank and batch of {tuple(like.shape)} "
                         f"(e.g. [B, K, 1] over [B, K, T]), got {tuple(mask.shape)}")
    try:
        torch.broadcast_shapes(mask.shape, like.shape)
    except RuntimeError:
        raise ValueError(f"{name} {tuple(mask.shape)} does not broadcast to {tuple(like.shape)}") from None
    return mask


def _alpha_grid(steps: int, alpha_grid: torch.Tensor | None) -> torch.Tensor:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if alpha_grid is None:
        return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    grid = torch.as_tensor(alpha_grid, dtype=torch.float64).cpu()
    if grid.shape != (steps + 1,):
        raise ValueError(f"alpha_grid must have steps + 1 = {steps + 1} points, got shape {tuple(grid.shape)}")
    if grid[0] < 0 or grid[-1] != 1 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("alpha_grid must increase strictly from a value >= 0 to exactly 1")
    return grid
