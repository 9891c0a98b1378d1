"""The masked diffusion prior over the stacked component latents ``z [B, K, Cz, T]`` of a frozen decomposer.

Training: draw a mask over the K components (True = masked = to be generated): the all-masked mask with probability
``all_masked_prob`` (the unconditional case; 0.5 is the paper's intent), otherwise uniformly one of the other
non-empty subsets. Masked components get the IADB blend ``a z + (1 - a) eps``, unmasked ones stay clean; the mask is
given to the U-Net as conditioning; the x0-loss counts the masked components only.

Uses: all masked -> unconditional generation; some masked -> variation (keep the others); with the decomposer's
decoder the sampled z become audio.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ucr.diffusion import iadb
from ucr.nn.unet1d import UNet1d


def sample_masks(batch: int, n_components: int, all_masked_prob: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, K]`` bool masks (True = masked): all-masked with probability ``all_masked_prob``, else uniform over
    the ``2^K - 2`` other non-empty subsets (for K = 1 the only subset is all-masked)."""
    K = n_components
    full = torch.ones(batch, K, dtype=torch.bool)
    if K == 1:
        return full
    subsets = torch.tensor([bits for bits in itertools.product([False, True], repeat=K)
                            if any(bits) and not all(bits)], dtype=torch.bool)  # [2^K - 2, K]
    choice = torch.randint(len(subsets), (batch,), generator=generator)
    partial = subsets[choice]  # [B, K]
    unconditional = torch.rand(batch, generator=generator) < all_masked_prob  # [B]
    return torch.where(unconditional[:, None], full, partial)


class MaskedPrior(nn.Module):
    """IADB U-Net over ``[B, K * Cz, T]`` conditioned on the mask (``[B, K, T]``, 1 = masked)."""

    def __init__(self, n_components: int, component_channels: int = 1, unet_channels=(64, 128, 256, 512),
                 attention_levels=(3,), attention_heads: int = 4, embedding_dim: int = 128, dropout: float = 0.1,
                 groupnorm_groups: int = 8, all_masked_prob: float = 0.5) -> None:
        super().__init__()
        self.n_components = n_components
        self.component_channels = component_channels
        self.all_masked_prob = all_masked_prob
        self.time_multiple = 2 ** (len(unet_channels) - 1)
        channels = n_components * component_channels
        self.unet = UNet1d(channels, channels, channels=tuple(unet_channels), attention_levels=tuple(attention_levels),
                           attention_heads=attention_heads, embedding_dim=embedding_dim, cond_channels=n_components,
                           dropout=dropout, groups=groupnorm_groups)
        # per-component standardisation of z, set from the training data (identity until then)
        self.register_buffer("z_mean", torch.zeros(n_components, component_channels, 1))
        self.register_buffer("z_std", torch.ones(n_components, component_channels, 1))

    def set_statistics(self, z: torch.Tensor) -> None:
        """``z [N, K, Cz, T]`` -> per-component mean and std buffers."""
        self.z_mean.copy_(z.mean(dim=(0, 3))[..., None])
        self.z_std.copy_(z.std(dim=(0, 3)).clamp_min(1e-5)[..., None])

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1:3] != (self.n_components, self.component_channels):
            raise ValueError(f"z must be [B, {self.n_components}, {self.component_channels}, T], got "
                             f"{tuple(z.shape)}")

    def denoise(self, x_alpha: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x_alpha [B, K, Cz, T]``, ``alpha [B]``, ``mask [B, K]`` -> clean prediction ``[B, K, Cz, T]``."""
        B, K, Cz, T = x_alpha.shape
        cond = mask.to(x_alpha.dtype)[..., None].expand(B, K, T)  # [B, K, T]
        return self.unet(x_alpha.reshape(B, K * Cz, T), alpha, cond).reshape(B, K, Cz, T)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss ``[B]`` for raw component latents ``z [B, K, Cz, T]`` (masks drawn with
        ``all_masked_prob``)."""
        self._check(z)
        mask = sample_masks(z.shape[0], self.n_components, self.all_masked_prob, generator)  # [B, K]
        return self.masked_loss(z, mask, generator)

    def masked_loss(self, z: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """x0-loss ``[B]`` on the masked components of raw ``z [B, K, Cz, T]`` for a given ``mask [B, K]`` (True =
        masked: noised and predicted; the others are given clean)."""
        self._check(z)
        B, K, Cz, T = z.shape
        clean = (z - self.z_mean) / self.z_std
        mask = mask.to(z.device)
        noised, alpha, _noise = iadb.training_inputs(clean, generator)
        mask4 = mask[:, :, None, None]  # [B, K, 1, 1]
        x_alpha = torch.where(mask4, noised, clean)
        prediction = self.denoise(x_alpha, alpha, mask)
        return iadb.x0_loss(prediction, clean, weight_mask=mask4.expand(B, K, Cz, 1).to(z.dtype))

    @torch.no_grad()
    def sample(self, shape_or_known: tuple | torch.Tensor, keep: torch.Tensor | None = None, steps: int = 50,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate component latents (raw scale).

        ``shape_or_known``: ``(B, T)`` for unconditional generation, or known ``z [B, K, Cz, T]`` with ``keep
        [B, K]`` bool (True = keep that component as given, generate the others). Any T (padded internally).
        Returns ``z [B, K, Cz, T]``; kept components are returned exactly.
        """
        device = self.z_mean.device
        if isinstance(shape_or_known, torch.Tensor):
            known = shape_or_known.to(device)
            self._check(known)
            B, K, Cz, T = known.shape
            if keep is None or keep.shape != (B, K):
                raise ValueError(f"keep must be a [B, K] = [{B}, {K}] bool mask when z is given")
        else:
            B, T = shape_or_known
            K, Cz = self.n_components, self.component_channels
            known = torch.zeros(B, K, Cz, T, device=device)
            keep = torch.zeros(B, K, dtype=torch.bool)
        keep = keep.to(device)
        pad = (-T) % self.time_multiple
        clean = nn.functional.pad((known - self.z_mean) / self.z_std, (0, pad))
        mask = ~keep  # True = generate
        noise = torch.randn(clean.shape, generator=generator,
                            device=generator.device if generator is not None else device).to(device)
        held = keep[:, :, None, None].expand_as(clean)

        def denoise(x_alpha: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            return self.denoise(x_alpha, alpha, mask)

        generated = iadb.sample(denoise, noise, steps, known=clean, known_mask=held)
        z = generated[..., :T] * self.z_std + self.z_mean
        return torch.where(keep[:, :, None, None], known, z)  # kept components exactly as given


@torch.no_grad()
def validation_loss(prior: MaskedPrior, z: torch.Tensor, seed: int = 0, batch_size: int = 32) -> float:
    """Mean masked x0-loss of ``prior`` on held-out component latents ``z [N, K, Cz, T]`` (T a multiple of the
    U-Net's ``time_multiple``), with the same draws for every model: seeded noise and noise levels, and masks from a
    fixed distribution (all-masked for half of the examples, one of the other subsets for the rest) whatever the
    prior's own ``all_masked_prob`` — so priors trained with different settings are compared on one task."""
    generator = torch.Generator().manual_seed(seed)
    masks = sample_masks(len(z), prior.n_components, 0.5, generator)  # [N, K]
    was_training = prior.training
    prior.eval()
    device = prior.z_mean.device
    losses = [prior.masked_loss(z[i:i + batch_size].to(device), masks[i:i + batch_size], generator).cpu()
              for i in range(0, len(z), batch_size)]
    prior.train(was_training)
    return float(torch.cat(losses).mean())


def build_prior(prior_config, model_config) -> MaskedPrior:
    """The one place a :class:`ucr.config.PriorConfig` (+ the decomposer's ModelConfig) becomes a prior."""
    return MaskedPrior(n_components=model_config.n_components, component_channels=model_config.component_channels,
                       unet_channels=prior_config.unet_channels, attention_levels=prior_config.attention_levels,
                       attention_heads=model_config.attention_heads, embedding_dim=model_config.embedding_dim,
                       dropout=prior_config.dropout, groupnorm_groups=model_config.groupnorm_groups,
                       all_masked_prob=prior_config.all_masked_prob)
