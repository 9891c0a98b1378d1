"""The decomposition model (Bindi & Esling 2024): K encoders, one shared diffusion decoder, mean composition.

Training sees mixtures only::

    z      = encoders(x)                       x [B, C, T] (normalised mixture latent) -> z [B, K, Cz, T]
    x_a    = a x + (1 - a) eps                 IADB blend, a ~ U(0, 1) (the paper; model.train_alpha_max < 1 narrows it)
    x_hat  = mean_k decoder(x_a, a, z_k)       the K clean-latent predictions, averaged (mean composition)
    loss   = |x_hat - x|^2                     x0-prediction
             (+ lambda * mean_{k<j} corr(z_k, z_j)^2 when model.z_decorrelation = lambda > 0; ours, not the paper's)
             (+ mu * mean_{k<j} corr(part_k, part_j)^2 of the decoded x0 parts, in the loss's channel weighting,
              when model.part_decorrelation = mu > 0; ours: a redundant split, every part the mixture, costs)
             (channels weighted by var_c^p when model.loss_channel_power = p > 0; ours: p = 1 is the raw-latent MSE)
             (+ mu * remix consistency when model.remix_weight = mu > 0; ours, see :meth:`Decomposer.remix_loss`)

Separation: for each k, the IADB sampler runs the decoder conditioned on z_k alone, starting from noise; the result is
component k's latent. With the paper's mean mixing (mixture = mean of the sources), component k estimates a source at
its own scale. The one-pass modes instead apply the decoder once to the observed mixture blended with noise (the
input it was trained on; see :meth:`Decomposer.separate`). The ``supervised`` loss trains the same architecture from
the same noisy-mixture input with each source's latent as the target of its own component: the ceiling of what this
architecture reaches with labels, used through the same separation modes.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from ucr.codec.stats import LatentStats
from ucr.config import RESIDUAL_GAINS, SEPARATION_MODES
from ucr.diffusion import iadb
from ucr.nn.encoders import ComponentEncoders
from ucr.nn.unet1d import UNet1d


def component_correlation(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Redundancy of the component latents, per example: the mean over pairs k < j of the squared Pearson
    correlation between z_k and z_j (each flattened over channels and frames). ``z [B, K, Cz, T]`` -> ``[B]`` in
    [0, 1]; 0 for K = 1. Differentiable (the decorrelation penalty of :meth:`Decomposer.loss`)."""
    B, K = z.shape[:2]
    if K < 2:
        return z.new_zeros(B)
    flat = z.reshape(B, K, -1)
    centred = flat - flat.mean(dim=-1, keepdim=True)
    unit = centred / (centred.norm(dim=-1, keepdim=True) + eps)  # [B, K, N]
    corr = unit @ unit.transpose(1, 2)  # [B, K, K]
    upper = torch.triu(torch.ones(K, K, dtype=torch.bool, device=z.device), diagonal=1)
    return corr[:, upper].pow(2).mean(dim=-1)


class Decomposer(nn.Module):
    def __init__(self, latent_channels: int, n_components: int, encoder_channels=(256, 512),
                 component_channels: int = 1, unet_channels=(128, 128, 256, 256, 512), blocks_per_level: int = 1,
                 attention_levels=(4,), attention_heads: int = 4, embedding_dim: int = 128, dropout: float = 0.1,
                 groupnorm_groups: int = 8, stats: LatentStats | None = None, train_alpha_max: float = 1.0,
                 z_decorrelation: float = 0.0, component_stride: int | tuple[int, ...] = 1,
                 remix_weight: float = 0.0, remix_alpha: float = 0.3, loss_channel_power: float = 0.0,
                 loss_channel_mix: float = 1.0, part_decorrelation: float = 0.0,
                 train_alpha_power: float = 1.0, encoder_input_masks: torch.Tensor | None = None) -> None:
        super().__init__()
        if remix_weight < 0.0 or not 0.0 <= remix_alpha <= 1.0:
            raise ValueError(f"remix_weight must be >= 0 and remix_alpha in [0, 1], got {remix_weight}, {remix_alpha}")
        self.remix_weight = float(remix_weight)  # weight of remix_loss() in loss(); paper: 0
        self.remix_alpha = float(remix_alpha)
        self._remix_teacher: tuple[Decomposer, ...] = ()  # a frozen teacher (set_remix_teacher); none = the model
        strides = (component_stride,) * n_components if isinstance(component_stride, int) else tuple(component_stride)
        if len(strides) != n_components or any(int(s) < 1 for s in strides):
            raise ValueError(f"component_stride must be one int >= 1 or one per component ({n_components}), "
                             f"got {component_stride}")
        self.component_strides = tuple(int(s) for s in strides)  # z_k held constant over blocks of frames; paper: 1
        if not 0.0 < train_alpha_max <= 1.0:
            raise ValueError(f"train_alpha_max must be in (0, 1], got {train_alpha_max}")
        if not train_alpha_power > 0.0:
            raise ValueError(f"train_alpha_power must be > 0, got {train_alpha_power}")
        if z_decorrelation < 0.0:
            raise ValueError(f"z_decorrelation must be >= 0, got {z_decorrelation}")
        self.z_decorrelation = float(z_decorrelation)  # weight of the z_k correlation penalty in loss(); paper: 0
        if part_decorrelation < 0.0:
            raise ValueError(f"part_decorrelation must be >= 0, got {part_decorrelation}")
        self.part_decorrelation = float(part_decorrelation)  # weight of the decoded parts' correlation penalty
        if loss_channel_power < 0.0:
            raise ValueError(f"loss_channel_power must be >= 0, got {loss_channel_power}")
        self.loss_channel_power = float(loss_channel_power)  # loss weight of channel c ~ var_c ** p; paper: 0
        if not 0.0 <= loss_channel_mix <= 1.0:
            raise ValueError(f"loss_channel_mix must be in [0, 1], got {loss_channel_mix}")
        self.loss_channel_mix = float(loss_channel_mix)  # share of the var_c ** p weighting; the rest uniform
        self.train_alpha_max = float(train_alpha_max)  # training draws alpha in [0, train_alpha_max); paper: 1
        self.train_alpha_power = float(train_alpha_power)  # alpha = max * u ** power; paper: 1 (uniform)
        self.latent_channels = latent_channels
        self.n_components = n_components
        self.time_multiple = 2 ** (len(unet_channels) - 1)
        self.encoders = ComponentEncoders(latent_channels, n_components, hidden=tuple(encoder_channels),
                                          out_channels=component_channels, input_masks=encoder_input_masks)
        self.decoder = UNet1d(latent_channels, latent_channels, channels=tuple(unet_channels),
                              blocks_per_level=blocks_per_level, attention_levels=tuple(attention_levels),
                              attention_heads=attention_heads, embedding_dim=embedding_dim,
                              cond_channels=component_channels, dropout=dropout, groups=groupnorm_groups)
        stats = stats or LatentStats.identity(latent_channels)
        if stats.channels != latent_channels:
            raise ValueError(f"latent statistics have {stats.channels} channels, the codec has {latent_channels}")
        self.register_buffer("latent_mean", torch.tensor(stats.mean, dtype=torch.float32)[:, None])  # [C, 1]
        self.register_buffer("latent_std", torch.tensor(stats.std, dtype=torch.float32)[:, None])  # [C, 1]

    # -- normalisation (per channel, statistics from the training data; identity when disabled) ----------------------
    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latent_mean) / self.latent_std

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.latent_std + self.latent_mean

    def _check(self, x: torch.Tensor, name: str = "mixture") -> None:
        if x.ndim != 3 or x.shape[1] != self.latent_channels:
            raise ValueError(f"{name} must be a latent [B, {self.latent_channels}, T], got {tuple(x.shape)}")

    # -- the model ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, latent: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Raw mixture latents ``[N, C, T]`` (any device) -> component latents ``z [N, K, Cz, T]`` on the latents'
        device, in batches of ``batch_size`` on the model's device: the one home of "latent -> z" at inference."""
        device = next(self.parameters()).device
        return torch.cat([self.components(self.normalize(latent[i:i + batch_size].to(device))).to(latent.device)
                          for i in range(0, len(latent), batch_size)])

    def components(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised mixture ``[B, C, T]`` -> component latents ``z [B, K, Cz, T]`` (z_k block-averaged over
        ``component_strides[k]`` frames where that is > 1, see :func:`hold_block_means`)."""
        z = self.encoders(x)
        if all(stride == 1 for stride in self.component_strides):
            return z
        return torch.stack([hold_block_means(z[:, k], stride) if stride > 1 else z[:, k]
                            for k, stride in enumerate(self.component_strides)], dim=1)

    def denoise_each(self, x_alpha: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The shared decoder run once per component, as one batch.

        ``x_alpha [B, C, T]`` (shared by all k) or ``[B, K, C, T]`` (one per k), ``alpha [B]``, ``z [B, K, Cz, T]``
        -> clean-latent predictions ``[B, K, C, T]``.
        """
        B, K, Cz, T = z.shape
        if x_alpha.ndim == 3:
            x_alpha = x_alpha[:, None].expand(B, K, *x_alpha.shape[1:])  # [B, K, C, T]
        C = x_alpha.shape[2]
        flat_x = x_alpha.reshape(B * K, C, T)  # [B*K, C, T]
        flat_alpha = alpha[:, None].expand(B, K).reshape(B * K)  # [B*K]
        flat_z = z.reshape(B * K, Cz, T)  # [B*K, Cz, T]
        return self.decoder(flat_x, flat_alpha, flat_z).reshape(B, K, C, T)

    @staticmethod
    def compose(parts: torch.Tensor) -> torch.Tensor:
        """The fixed composition operator: the mean over components. ``[B, K, C, T] -> [B, C, T]``."""
        return parts.mean(dim=1)

    def loss(self, mixture: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unsupervised loss on raw mixture latents ``[B, C, T]`` -> per-example loss ``[B]``."""
        self._check(mixture)
        x = self.normalize(mixture)
        z = self.components(x)  # [B, K, Cz, T]
        x_alpha, alpha, _noise = iadb.training_inputs(x, generator, self.train_alpha_max, self.train_alpha_power)
        parts = self.denoise_each(x_alpha, alpha, z)  # [B, K, C, T]
        weights = self.channel_loss_weights(x.shape[0])  # [B, C, 1] or None
        loss = iadb.x0_loss(self.compose(parts), x, weights)
        if self.z_decorrelation > 0.0:
            loss = loss + self.z_decorrelation * component_correlation(z)
        if self.part_decorrelation > 0.0:  # in the loss's own channel weighting
            scaled = parts if weights is None else parts * weights[:, None].sqrt()
            loss = loss + self.part_decorrelation * component_correlation(scaled)
        if self.remix_weight > 0.0:
            loss = loss + self.remix_weight * self.remix_loss(x, generator)
        return loss

    def channel_loss_weights(self, batch: int) -> torch.Tensor | None:
        """``[batch, C, 1]`` loss weights ``(1 - m) + m * var_c ** p / mean(var ** p)`` (mean 1) for
        ``loss_channel_power = p > 0`` and ``loss_channel_mix = m``, else None (the paper's uniform weights)."""
        if self.loss_channel_power == 0.0 or self.loss_channel_mix == 0.0:
            return None
        weights = self.latent_std.square().pow(self.loss_channel_power)  # [C, 1]
        weights = (1.0 - self.loss_channel_mix) + self.loss_channel_mix * weights / weights.mean()
        return weights.expand(batch, -1, -1)

    def set_remix_teacher(self, teacher: "Decomposer") -> None:
        """Make the remix targets with a frozen ``teacher`` (same architecture and device) instead of this model.
        The teacher is held outside the module tree: it is not trained, saved or synchronised."""
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        self._remix_teacher = (teacher.eval(),)

    def remix_targets(self, x: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """New mixtures made of this model's own components, and those components (no gradients; ours).

        The normalised mixtures ``x [B, C, T]`` are separated (by this model, or by the frozen teacher of
        :meth:`set_remix_teacher`) in one pass at ``remix_alpha`` (one noise draw) with
        the blind residual rule, so each example's components compose to it exactly. Component 0 keeps its example;
        every other component k is moved to another example by its own random permutation ``pi_k`` of the batch.
        Returns ``(remixed [B, C, T], targets [B, K, C, T])``, both normalised, with ``targets[b, k]`` = component
        k of example ``pi_k(b)`` and ``remixed = mean_k targets[:, k]`` (the composition operator).
        """
        B, K = x.shape[0], self.n_components
        teacher = self._remix_teacher[0] if self._remix_teacher else self
        with torch.no_grad():
            parts = self.denormalize(teacher.one_pass(x, teacher.components(x), self.remix_alpha, 1, generator))
            mixture = self.denormalize(x)
            parts = self.normalize(replace_with_residual(parts, mixture, coherence_with_mixture(parts, mixture)
                                                         .mean(dim=0), fit_gains=False))  # [B, K, C, T], mean == x
            source = generator.device if generator is not None else x.device
            order = [torch.arange(B, device=x.device)] + [
                torch.randperm(B, generator=generator, device=source).to(x.device) for _ in range(K - 1)]
            targets = torch.stack([parts[order[k], k] for k in range(K)], dim=1)  # [B, K, C, T]
        return self.compose(targets), targets

    def remix_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Remix consistency (ours, after RemixIT / self-remixing in unsupervised source separation): the model
        must give back, from a mixture of components of different examples (:meth:`remix_targets`), exactly those
        components, each from its own z_k — through the same noisy-mixture input as :meth:`loss`. A redundant
        decomposition fails it (each of its components is the whole mixture), and a component that is noise in
        the model's own separation is replaced by the coherent residual in the targets. ``x [B, C, T]``
        (normalised) -> ``[B]``.
        """
        remixed, targets = self.remix_targets(x, generator)
        x_alpha, alpha, _noise = iadb.training_inputs(remixed, generator, self.train_alpha_max,
                                                             self.train_alpha_power)
        weights = self.channel_loss_weights(x.shape[0])  # [B, C, 1] or None: the weighting of :meth:`loss`
        return iadb.x0_loss(self.denoise_each(x_alpha, alpha, self.components(remixed)), targets,
                            None if weights is None else weights[:, None])

    def supervised_loss(self, mixture: torch.Tensor, sources: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Supervised reference: component k is trained to give source k, from the input the unsupervised model
        sees (the noisy mixture) — so that at inference it is used exactly like the unsupervised model and bounds it.

        ``x_alpha = blend(mixture, eps, alpha)`` (shared by all k, as in :meth:`loss`), prediction_k =
        ``decoder(x_alpha, alpha, z_k)``, target = source k. ``mixture [B, C, T]``, ``sources [B, K, C, T]`` (raw
        latents, K = number of sources) -> ``[B]``.
        """
        self._check(mixture)
        B, K, C, T = sources.shape
        if K != self.n_components:
            raise ValueError(f"supervised training needs n_components = number of sources ({K}), "
                             f"got {self.n_components}")
        x = self.normalize(mixture)
        z = self.components(x)
        targets = self.normalize(sources)  # [B, K, C, T] (normalisation is per channel, broadcast over K)
        x_alpha, alpha, _noise = iadb.training_inputs(x, generator, self.train_alpha_max, self.train_alpha_power)
        weights = self.channel_loss_weights(B)  # [B, C, 1] or None; the same channel weighting as :meth:`loss`
        return iadb.x0_loss(self.denoise_each(x_alpha, alpha, z), targets,
                            None if weights is None else weights[:, None])

    def forward(self, mixture: torch.Tensor, sources: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-example training loss ``[B]`` (unsupervised, or supervised when ``sources [B, K, C, T]`` is given).
        The loss is ``forward`` so that DistributedDataParallel synchronises its gradients."""
        if sources is None:
            return self.loss(mixture, generator)
        return self.supervised_loss(mixture, sources, generator)

    # -- inference ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def separate(self, mixture: torch.Tensor, steps: int = 50, generator: torch.Generator | None = None,
                 mode: str = "independent", alpha: float = 0.3, draws: int = 4,
                 noises: list[torch.Tensor] | None = None, residual_gain: str = "least_squares") -> torch.Tensor:
        """Raw mixture latents ``[B, C, T]`` -> component latents ``[B, K, C, T]`` (raw scale).

        ``mode`` is one of :data:`ucr.config.SEPARATION_MODES`:

        - ``independent`` (the paper): each component is sampled with the decoder conditioned on its own z_k alone.
        - ``mixture_consistent``: at every sampler step the K clean predictions are corrected so that their
          composition (mean) equals the observed mixture (:func:`project_to_mixture`).
        - ``one_pass``: no sampler. The decoder is applied once to the observed mixture blended with noise at
          ``alpha`` — exactly the input it is trained on — once per z_k; ``draws`` noise draws are averaged
          (:meth:`one_pass`). ``steps`` is unused.
        - ``one_pass_residual``: ``one_pass``, then the least trusted component (:func:`coherence_with_mixture`,
          decided once for the whole batch, so windows of one track stay consistent) is replaced by the mixture
          residual: the composition equals the mixture exactly (:func:`replace_with_residual`; ``residual_gain``
          ``least_squares`` fits the kept components' gains to the mixture first, ``unit`` keeps them as decoded).

        All K components run as one batch; any T works (padded internally). ``noises``: for the one-pass modes, the
        noise of each draw (``draws`` tensors shaped like the padded mixture, :meth:`one_pass_noise_shape`) instead
        of drawing it from ``generator`` — how several requests share one batch and keep their own seeds.
        """
        self._check(mixture)
        if mode not in SEPARATION_MODES:
            raise ValueError(f"separation mode {mode!r} is not supported; choose one of {list(SEPARATION_MODES)}")
        B, C, T = mixture.shape
        pad = (-T) % self.time_multiple
        x = nn.functional.pad(self.normalize(mixture), (0, pad), mode="replicate" if pad < T else "constant")
        z = self.components(x)  # [B, K, Cz, T']
        if mode in ("one_pass", "one_pass_residual"):
            parts = self.denormalize(self.one_pass(x, z, alpha, draws, generator, noises))[..., :T]  # [B, K, C, T]
            if mode == "one_pass_residual":
                parts = replace_with_residual(parts, mixture, coherence_with_mixture(parts, mixture).mean(dim=0),
                                              fit_gains=_fits_gains(residual_gain))
            return parts
        parts, _mixture = self.decode_components(z, steps, generator,
                                                 target=x if mode == "mixture_consistent" else None)
        return parts[..., :T]

    @torch.no_grad()
    def separate_many(self, mixtures: torch.Tensor, max_batch: int = 16, steps: int = 50,
                      generator: torch.Generator | None = None, mode: str = "independent", alpha: float = 0.3,
                      draws: int = 4, on_progress: Callable[[float], None] | None = None,
                      noises: list[torch.Tensor] | None = None, groups: list[int] | None = None,
                      residual_gain: str = "least_squares") -> torch.Tensor:
        """:meth:`separate` over many excerpts ``[N, C, T]`` (e.g. the windows of one track) in batches of
        ``max_batch``, on the model's device -> ``[N, K, C, T]`` on the CPU. For ``one_pass_residual`` the blind
        choice of the component to replace is made once per group (``groups``: consecutive group sizes summing to
        N, e.g. the windows of each of several tracks; default one group), so component k means the same over a
        group. ``noises``: the one-pass noise of every excerpt, per draw ``[N, C, T']`` (see :meth:`separate`).
        ``on_progress(done)``: the number of excerpts done, in fractions of a batch while the sampler runs."""
        device = next(self.parameters()).device
        base = "one_pass" if mode == "one_pass_residual" else mode
        parts = []
        for start in range(0, len(mixtures), max_batch):
            batch = mixtures[start:start + max_batch].to(device)  # [n, C, T]

            def on_step(done: int, total: int, start: int = start, size: int = len(batch)) -> None:
                on_progress(start + size * done / total)

            with iadb.step_listener(on_step) if on_progress else nullcontext():
                parts.append(self.separate(batch, steps=steps, generator=generator, mode=base, alpha=alpha, draws=draws,
                                           noises=None if noises is None else
                                           [n[start:start + max_batch] for n in noises]).cpu())  # [n, K, C, T]
            if on_progress:
                on_progress(start + len(batch))
        parts = torch.cat(parts)  # [N, K, C, T]
        if mode == "one_pass_residual":
            mixtures = mixtures.cpu()
            chosen = []
            for group_parts, group_mixtures in zip(parts.split(groups or [len(parts)]),
                                                   mixtures.split(groups or [len(mixtures)])):
                chosen.append(replace_with_residual(group_parts, group_mixtures,
                                                    coherence_with_mixture(group_parts, group_mixtures).mean(dim=0),
                                                    fit_gains=_fits_gains(residual_gain)))
            parts = torch.cat(chosen)
        return parts

    @torch.no_grad()
    def one_pass_noise_shape(self, batch: int, frames: int) -> tuple[int, int, int]:
        """Shape of one draw's noise for :meth:`separate` of ``[batch, C, frames]`` in a one-pass mode."""
        return batch, self.latent_channels, frames + (-frames) % self.time_multiple

    def one_pass(self, x: torch.Tensor, z: torch.Tensor, alpha: float, draws: int = 4,
                 generator: torch.Generator | None = None, noises: list[torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """The decoder's clean prediction for each component from the observed mixture, in one pass.

        ``x [B, C, T]`` (normalised mixture, T a multiple of :attr:`time_multiple`), ``z [B, K, Cz, T]`` ->
        ``[B, K, C, T]`` (normalised): ``mean_d decoder(alpha x + (1 - alpha) eps_d, alpha, z_k)`` over ``draws``
        noise draws (the same draw for every k, as in training), drawn in antithetic pairs (:func:`one_pass_noise`)
        unless ``noises`` gives them.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"one-pass alpha must be in [0, 1], got {alpha}")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be a positive integer, got {draws!r}")
        if noises is not None and (len(noises) != draws or any(n.shape != x.shape for n in noises)):
            raise ValueError(f"noises: expected {draws} tensors of shape {tuple(x.shape)}")
        levels = torch.full((x.shape[0],), float(alpha), device=x.device, dtype=x.dtype)  # [B]
        if noises is None:
            noises = one_pass_noise(tuple(x.shape), draws, generator, x.device)
        total = None
        for noise in noises:
            noise = noise.to(x.device)
            prediction = self.denoise_each(iadb.blend(x, noise, levels), levels, z)  # [B, K, C, T]
            total = prediction if total is None else total + prediction
        return total / draws

    @torch.no_grad()
    def decode_components(self, z: torch.Tensor, steps: int = 50, generator: torch.Generator | None = None,
                          target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Given component latents ``z [B, K, Cz, T]`` (e.g. from the prior), sample each component's latent and
        return ``(parts [B, K, C, T], mixture [B, C, T])`` in raw scale; the mixture is their mean (composition).

        ``target [B, C, T]`` (normalised): make the composition of the predictions equal it at every step.
        """
        B, K, Cz, T = z.shape
        pad = (-T) % self.time_multiple
        z = nn.functional.pad(z, (0, pad))
        flat_z = z.reshape(B * K, Cz, T + pad)
        device = z.device
        noise = torch.randn((B * K, self.latent_channels, T + pad), generator=generator,
                            device=generator.device if generator else device).to(device)

        def denoise(x_alpha: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
            prediction = self.decoder(x_alpha, alpha, flat_z)  # [B*K, C, T']
            if target is None:
                return prediction
            parts = prediction.reshape(B, K, self.latent_channels, T + pad)
            return project_to_mixture(parts, target).reshape(B * K, self.latent_channels, T + pad)

        parts = iadb.sample(denoise, noise, steps)
        parts = self.denormalize(parts.reshape(B, K, self.latent_channels, T + pad)[..., :T])
        return parts, self.compose(parts)


def hold_block_means(z: torch.Tensor, stride: int) -> torch.Tensor:
    """``z [..., T]`` -> the same shape, each block of ``stride`` frames replaced by its mean (the last block may be
    shorter): a z at ``1 / stride`` of the frame rate, held constant so the decoder still sees ``T`` frames."""
    T = z.shape[-1]
    blocks = -(-T // stride)
    padded = nn.functional.pad(z, (0, blocks * stride - T))  # [..., blocks * stride]
    sums = padded.reshape(*z.shape[:-1], blocks, stride).sum(-1)  # [..., blocks]
    sizes = torch.full((blocks,), float(stride), dtype=z.dtype, device=z.device)
    sizes[-1] = T - (blocks - 1) * stride
    return (sums / sizes).repeat_interleave(stride, dim=-1)[..., :T]


def one_pass_noise(shape: tuple[int, ...], draws: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[torch.Tensor]:
    """The ``draws`` noise tensors of a one-pass separation, each ``shape``, in antithetic pairs
    ``eps, -eps`` (an odd count ends with one unpaired draw) (ours).

    Both halves of a pair are exact draws of the training noise, so the average over draws estimates the same
    ``E_eps[decoder(alpha x + (1 - alpha) eps)]``; the pair cancels the part of the decoder's output that is odd in
    the noise, which is most of its draw-to-draw spread: 4 paired draws score as well as 64 independent ones
    (docs/results/research, section S). Drawn on ``generator``'s device, returned on ``device``."""
    draw_device = generator.device if generator is not None else device
    noises: list[torch.Tensor] = []
    while len(noises) < draws:
        noise = torch.randn(shape, generator=generator, device=draw_device).to(device or draw_device)
        noises.extend([noise, -noise][:draws - len(noises)])
    return noises


def coherence_with_mixture(parts: torch.Tensor, mixture: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The blind trust score: scale-invariant SDR (dB) of each component against the mixture it came from.

    ``parts [B, K, C, T]``, ``mixture [B, C, T]`` -> ``[B, K]``. A component that follows one source of the mixture
    is coherent with it (positive projection, a high score); an incoherent, noise-like component (the failure mode
    of a component whose z carries little) scores low. No labels are used. For an orthogonal codec (the MDCT) it
    equals the waveform SI-SDR.
    """
    B, K = parts.shape[:2]
    p = parts.reshape(B, K, -1).double()
    m = mixture.reshape(B, 1, -1).double()
    scale = (p * m).sum(-1, keepdim=True) / (m.square().sum(-1, keepdim=True) + eps)  # [B, K, 1]
    target = scale * m
    error = p - target
    return (10 * torch.log10((target.square().sum(-1) + eps) / (error.square().sum(-1) + eps))).float()


def _fits_gains(residual_gain: str) -> bool:
    if residual_gain not in RESIDUAL_GAINS:
        raise ValueError(f"residual_gain {residual_gain!r} is not supported; choose one of {list(RESIDUAL_GAINS)}")
    return residual_gain == "least_squares"


def replace_with_residual(parts: torch.Tensor, mixture: torch.Tensor, trust: torch.Tensor,
                          fit_gains: bool = True) -> torch.Tensor:
    """Replace the least trusted component by the mixture residual, so that ``mean_k parts_k == mixture`` exactly.

    ``parts [B, K, C, T]`` and ``mixture [B, C, T]`` (same scale), ``trust [K]`` (one decision for the batch) or
    ``[B, K]`` (per example) -> ``[B, K, C, T]``. With mean composition the residual is ``K * mixture - sum of the
    kept components``. With ``fit_gains`` each kept component is first rescaled, per example, by the least-squares
    gains that best explain ``K * mixture`` with the kept components: a one-pass estimate is shrunk (it is a
    posterior mean under heavy noise), and without the fit the residual keeps the part it lost (measured: +0.4 to
    +0.8 dB on the residual's source, docs/results/research). K = 1: the component is the mixture.
    """
    B, K = parts.shape[:2]
    if trust.shape not in ((K,), (B, K)):
        raise ValueError(f"trust must be [K] or [B, K] with K = {K}, got {tuple(trust.shape)}")
    dropped = trust.argmin(dim=-1).expand(B) if trust.ndim == 1 else trust.argmin(dim=-1)  # [B]
    keep = torch.ones(B, K, 1, 1, dtype=parts.dtype, device=parts.device)
    keep[torch.arange(B), dropped] = 0.0
    if fit_gains and K > 1:
        parts = parts * least_squares_gains(parts, K * mixture, keep[..., 0, 0])[..., None, None]
    residual = K * mixture - (parts * keep).sum(dim=1)  # [B, C, T]
    return parts * keep + (1 - keep) * residual[:, None]


def least_squares_gains(parts: torch.Tensor, target: torch.Tensor, use: torch.Tensor,
                        ridge: float = 1e-6) -> torch.Tensor:
    """Per example, the gains ``g [B, K]`` minimising ``|target - sum_k g_k parts_k|^2`` over the components with
    ``use [B, K] == 1`` (the others get gain 1). ``parts [B, K, C, T]``, ``target [B, C, T]``. A tiny ridge keeps a
    silent component's gain at 1 rather than undefined."""
    B, K = parts.shape[:2]
    flat = parts.reshape(B, K, -1).double() * use[..., None].double()  # unused components contribute nothing
    gram = flat @ flat.transpose(1, 2)  # [B, K, K]
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp(min=1e-30)[:, None, None]
    eye = torch.eye(K, dtype=gram.dtype, device=gram.device)
    rhs = flat @ target.reshape(B, -1, 1).double()  # [B, K, 1]
    # ridge toward 1 (the unfitted gain): (G + r I) g = b + r 1
    gains = torch.linalg.solve(gram + ridge * scale * eye, rhs + ridge * scale * torch.ones_like(rhs))[..., 0]
    return torch.where(use.bool(), gains, torch.ones_like(gains)).to(parts.dtype)


def project_to_mixture(parts: torch.Tensor, mixture: torch.Tensor, smooth: tuple[int, int] = (3, 3),
                       eps: float = 1e-8) -> torch.Tensor:
    """Correct ``parts [B, K, C, T]`` so that their mean equals ``mixture [B, C, T]``.

    The residual ``r = mixture - mean_k p_k`` is shared in proportion to each part's local energy,
    ``w_k = E_k / sum_j E_j`` with ``E_k = p_k^2`` averaged over a ``smooth`` (channels x frames) neighbourhood (a
    Wiener-like split with a smoothed power estimate; (1, 1) = per coefficient). ``mean_k(p_k + K w_k r) = mixture``.
    """
    B, K, C, T = parts.shape
    residual = mixture - parts.mean(dim=1)  # [B, C, T]
    energy = parts.square().reshape(B * K, 1, C, T)
    if smooth != (1, 1):
        energy = nn.functional.avg_pool2d(energy, smooth, stride=1, padding=(smooth[0] // 2, smooth[1] // 2),
                                          count_include_pad=False)
    energy = energy.reshape(B, K, C, T) + eps
    weights = energy / energy.sum(dim=1, keepdim=True)  # [B, K, C, T]
    return parts + K * weights * residual[:, None]


def band_masks(bands, channel_hz: list[float] | None) -> torch.Tensor:
    """``model.component_bands`` (one ``[low_hz, high_hz)`` per component) -> 0 / 1 masks ``[K, C]`` over the latent
    channels, whose frequencies are ``channel_hz [C]`` (:func:`ucr.codec.channel_frequencies`)."""
    if channel_hz is None:
        raise ValueError("model.component_bands needs a codec whose latent channels are frequencies (mdct, stft_mag, "
                         "stft_if); EnCodec's are not")
    hz = torch.tensor(channel_hz, dtype=torch.float64)
    masks = torch.stack([(hz >= low) & (hz < high) for low, high in bands]).float()  # [K, C]
    for (low, high), row in zip(bands, masks):
        if not row.any():
            raise ValueError(f"model.component_bands: no latent channel lies in [{low:g}, {high:g}) Hz (channels "
                             f"span {min(channel_hz):g}-{max(channel_hz):g} Hz)")
    return masks


def build_decomposer(model_config, latent_channels: int, stats: LatentStats | None = None,
                     channel_hz: list[float] | None = None) -> Decomposer:
    """The one place a :class:`ucr.config.ModelConfig` becomes a :class:`Decomposer`. ``channel_hz [C]``: the
    frequency of each latent channel (:func:`ucr.codec.channel_frequencies`), needed by ``model.component_bands``."""
    masks = band_masks(model_config.component_bands, channel_hz) if model_config.component_bands else None
    if masks is not None and masks.shape[1] != latent_channels:
        raise ValueError(f"model.component_bands: the codec has {len(channel_hz)} channel frequencies for "
                         f"{latent_channels} latent channels")
    return Decomposer(latent_channels=latent_channels, n_components=model_config.n_components,
                      encoder_channels=model_config.encoder_channels,
                      component_channels=model_config.component_channels,
                      unet_channels=model_config.unet_channels, blocks_per_level=model_config.blocks_per_level,
                      attention_levels=model_config.attention_levels,
                      attention_heads=model_config.attention_heads, embedding_dim=model_config.embedding_dim,
                      dropout=model_config.dropout, groupnorm_groups=model_config.groupnorm_groups, stats=stats,
                      train_alpha_max=model_config.train_alpha_max,
                      z_decorrelation=model_config.z_decorrelation,
                      component_stride=model_config.strides(),
                      remix_weight=model_config.remix_weight, remix_alpha=model_config.remix_alpha,
                      loss_channel_power=model_config.loss_channel_power,
                      loss_channel_mix=model_config.loss_channel_mix,
                      part_decorrelation=model_config.part_decorrelation,
                      train_alpha_power=model_config.train_alpha_power, encoder_input_masks=masks)
