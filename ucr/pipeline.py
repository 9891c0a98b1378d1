"""``Pipeline``: a trained model + its codec, ready to separate (and, with a prior, to generate and vary) audio.

Used by the CLI, the Ray jobs and the Serve application; all the maths of a request goes through here::

    from ucr.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained("demo_out")       # or a checkpoint, a run folder, models:/ucr@champion
    result = pipeline.separate("song.wav")                 # or separate(wave [channels, L], sample_rate)
    for name, wave in zip(result.names, result.components):  # [K, L] at result.sample_rate
        ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ucr import audio, baselines
from ucr import checkpoint as ckpt
from ucr.codec import LatentCodec, build_codec, channel_frequencies
from ucr.codec.stats import LatentStats
from ucr.config import SEPARATION_MODES, ExperimentConfig
from ucr.decomposer import Decomposer, build_decomposer, one_pass_noise
from ucr.diffusion import iadb
from ucr.device import resolve_device


@dataclass(frozen=True)
class Separation:
    components: np.ndarray  # [K, L] at sample_rate
    sample_rate: int
    steps: int
    names: tuple[str, ...] = field(default=())  # one per component: its source name when known, else componentK
    mode: str = ""  # the separation mode used (the model's default when none was asked for)


def component_names(sources, n_components: int) -> tuple[str, ...]:
    """File-safe names for K components from ``sources`` (the source each component stands for, None for one that
    stands for none; or None when unknown): the source's name when one component has it, ``<source>_componentK``
    when several share it, else ``componentK``."""
    if not sources or len(sources) != n_components:
        return tuple(f"component{k}" for k in range(n_components))
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("._") if s else "" for s in sources]
    return tuple(name if name and safe.count(name) == 1 else f"{name}_component{k}" if name else f"component{k}"
                 for k, name in enumerate(safe))


class _Bar:
    """A tqdm bar on stderr (or nothing) that callbacks can move to an absolute position."""

    def __init__(self, enabled: bool, total: float, desc: str, unit: str) -> None:
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]") \
            if enabled else None

    def to(self, position: float) -> None:
        if self.bar is not None:
            self.bar.update(min(position, self.bar.total) - self.bar.n)

    def steps(self, offset: float) -> Callable[[int, int], None]:
        """A sampler step listener that moves the bar to ``offset + done``."""
        return lambda done, _total: self.to(offset + done)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def crossfade_weights(length: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """Weights ``[length]`` for overlap-add: linear ramps over ``overlap`` frames on inner edges (they sum to 1)."""
    weights = torch.ones(length)
    if overlap > 0:
        ramp = (torch.arange(overlap) + 0.5) / overlap
        if not first:
            weights[:overlap] = ramp
        if not last:
            weights[-overlap:] = ramp.flip(0)
    return weights


def shift_offsets(hop_length: int, shifts: int) -> list[int]:
    """The delays (samples) of the shift trick: ``shifts`` offsets spread evenly over one latent frame."""
    return [round(i * hop_length / shifts) for i in range(shifts)]


def average_over_shifts(separate: Callable[[list[torch.Tensor]], list[torch.Tensor]], mixtures: list[torch.Tensor],
                        hop_length: int, shifts: int) -> list[torch.Tensor]:
    """The shift trick (``diffusion.shifts``). ``separate`` maps mixtures ``[L_i']`` (every ``L_i'`` a multiple of
    ``hop_length``) to their components ``[K, L_i']``; it runs once per offset of :func:`shift_offsets` on the
    mixtures ``[L_i]``, zero-padded to whole frames and circularly delayed by the offset; each result is delayed
    back, cut to ``L_i`` and averaged -> components ``[K, L_i]``. Each run frames the audio at other places, so the
    framing's errors average out; components that sum to their mixture in every run still do."""
    if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 1:
        raise ValueError(f"shifts must be a whole number >= 1 (1 = no shift trick), got {shifts!r}")
    padded = [torch.nn.functional.pad(m, (0, -m.shape[-1] % hop_length)) for m in mixtures]
    total: list[torch.Tensor] | None = None
    for offset in shift_offsets(hop_length, shifts):
        outs = [torch.roll(out, -offset, dims=-1)
                for out in separate([torch.roll(m, offset, dims=-1) for m in padded])]
        total = outs if total is None else [t + o for t, o in zip(total, outs)]
    return [t[..., :m.shape[-1]] / shifts for t, m in zip(total, mixtures)]


class Pipeline:
    def __init__(self, model: Decomposer, codec: LatentCodec, config: ExperimentConfig, metadata: dict | None = None,
                 device: torch.device | None = None, prior=None) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.codec = codec.to(self.device)
        self.config = config
        self.metadata = metadata or {}
        self.prior = prior.to(self.device).eval() if prior is not None else None

    @property
    def n_components(self) -> int:
        return self.model.n_components

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def component_names(self) -> tuple[str, ...]:
        """One name per component: the source it stands for when the model knows (a supervised model, or the
        assignment the evaluate stage stored), else ``componentK``."""
        return component_names(self.metadata.get("component_sources"), self.n_components)

    @classmethod
    def from_pretrained(cls, reference: str | None = None, device: str = "auto") -> "Pipeline":
        """Load a model from any reference :func:`ucr.models.resolve` accepts: a checkpoint file, a run folder, an
        experiment folder (``demo_out``), an ``s3://`` URI, ``models:/<name>@<alias>`` or ``models:/<name>/<N>``;
        with none, ``$UCR_MODEL``, the registry's champion (when ``MLFLOW_TRACKING_URI`` is set), then the last
        ``make demo`` model. ``device``: auto (CUDA when present), cpu, cuda or cuda:N."""
        from ucr import models

        found = models.resolve(reference)
        try:
            pipeline = cls.from_checkpoint(found.checkpoint, device=device, component_sources=found.component_sources)
        finally:
            found.cleanup()  # the weights are in memory now
        pipeline.metadata.update(name=found.name, found_by=found.found_by, downloaded=found.workdir is not None)
        return pipeline

    @classmethod
    def from_checkpoint(cls, uri: str, device: str = "cpu", use_ema: bool = True,
                        component_sources: list | tuple | None = None) -> "Pipeline":
        """Rebuild from a checkpoint file or run folder (local or ``s3://``): a decomposer checkpoint (separation),
        or a prior checkpoint, which embeds its decomposer (separation, generation, variation). The codec is rebuilt
        from the stored config and must produce the fingerprint the model was trained with.

        ``component_sources`` (one source name or None per component) overrides what the checkpoint records (the
        registry keeps it as a version tag)."""
        payload = ckpt.load(uri)
        stored_sources = payload.get("component_sources")  # set on the file that was evaluated (prior or decomposer)
        prior = None
        if payload["kind"] == "prior":
            from ucr.prior import build_prior

            prior_config = ExperimentConfig.from_dict(payload["config"])
            prior = build_prior(prior_config.prior, prior_config.model)
            prior.load_state_dict(ckpt.inference_weights(payload, use_ema))
            prior.eval()
            payload = {**payload["decomposer"], "ema": None}
        if payload["kind"] not in ("decomposer", "supervised"):
            raise ValueError(f"{uri} holds a {payload['kind']!r} checkpoint, not a decomposer or prior")
        config = ExperimentConfig.from_dict(payload["config"])
        codec = build_codec(config.codec)
        trained_with = payload.get("codec", {}).get("fingerprint")
        if trained_with and trained_with != codec.fingerprint:
            raise ValueError(f"{uri} was trained on latents of codec {trained_with}, but the codec built from its "
                             f"config is {codec.fingerprint}; point codec.weights at the same weights")
        stats = LatentStats.from_dict(payload["stats"]) if payload.get("stats") else None
        model = build_decomposer(config.model, codec.channels, stats, channel_frequencies(config.codec))
        model.load_state_dict(ckpt.inference_weights(payload, use_ema))
        if component_sources is None:  # a supervised model's component k is source k by construction
            component_sources = stored_sources or payload.get("component_sources") or (
                payload.get("sources") if payload["kind"] == "supervised" else None)
        metadata = {"uri": uri, "kind": "prior" if prior is not None else payload["kind"], "step": payload.get("step"),
                    "sources": payload.get("sources"), "has_prior": prior is not None,
                    "component_sources": list(component_sources) if component_sources else None}
        return cls(model, codec, config, metadata, device=resolve_device(device), prior=prior)

    def resolve_steps(self, steps: int | None, name: str = "steps") -> int:
        """Sampler steps as asked (``None``: the model's ``diffusion.sampler_steps``), checked to lie in [1, 1000]."""
        steps = self.config.diffusion.sampler_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise ValueError(f"{name} must be an integer in [1, 1000], got {steps!r}")
        return steps

    def resolve_mode(self, mode: str | None) -> str:
        """The separation mode as asked (``None``: the model's ``diffusion.separation``), checked."""
        mode = self.config.diffusion.separation if mode is None else mode
        if mode not in SEPARATION_MODES:
            raise ValueError(f"separation mode {mode!r} is not supported; choose one of {list(SEPARATION_MODES)}")
        return mode

    def resolve_alpha(self, alpha: float | None) -> float:
        """The one-pass blend level alpha* as asked (``None``: the model's ``diffusion.one_pass_alpha``), checked to
        lie in [0, 1]."""
        alpha = self.config.diffusion.one_pass_alpha if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (the one-pass blend level alpha*), got {alpha!r}")
        return float(alpha)

    # -- input conditioning ------------------------------------------------------------------------------------------
    def prepare(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Any ``[L]`` or ``[channels, L]`` float input -> mono ``[L]`` at the codec's rate; clear errors for input
        that cannot be separated."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 1:
            wave = wave[None]
        if wave.ndim != 2:
            raise ValueError(f"audio must be [L] or [channels, L], got shape {wave.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        wave = audio.check_separable(wave, sample_rate)
        if sample_rate != self.sample_rate:
            wave = audio.resample(wave, sample_rate, self.sample_rate)
        return wave[0]

    # -- separation --------------------------------------------------------------------------------------------------
    def _window_plan(self, frames: int, window_frames: int | None = None, overlap_frames: int | None = None
                     ) -> tuple[list[int], int, int]:
        """``(starts, window, overlap)`` cutting ``frames`` into windows of ``window_frames`` (default: the training
        crop) with ``overlap_frames`` of crossfade (default: a quarter window); one window when it fits."""
        window = window_frames or self.config.data.crop_frames
        overlap = min(overlap_frames if overlap_frames is not None else window // 4, window // 2)
        if frames <= window:
            return [0], frames, overlap
        hop = window - overlap
        return list(range(0, frames - window, hop)) + [frames - window], window, overlap

    def _overlap_add(self, parts: torch.Tensor, starts: list[int], window: int, overlap: int,
                     frames: int) -> torch.Tensor:
        """Window parts ``[N, K, C, W]`` -> ``[K, C, frames]`` with normalised linear crossfades."""
        total = torch.zeros(self.n_components, parts.shape[2], frames)
        weight = torch.zeros(frames)
        for index, start in enumerate(starts):
            w = crossfade_weights(window, overlap, index == 0, index == len(starts) - 1)
            total[..., start:start + window] += parts[index] * w
            weight[start:start + window] += w
        return total / weight.clamp_min(1e-6)  # normalised: overlaps of any size blend smoothly

    def _one_pass_noise(self, windows: int, frames: int, seed: int, draws: int, max_batch: int
                        ) -> list[torch.Tensor]:
        """The noise an input's windows get in a one-pass mode, per draw ``[windows, C, W']``: drawn from its own
        seed in the order its windows would run alone (batches of ``max_batch``, every draw of a batch in turn, in
        antithetic pairs: :func:`ucr.decomposer.one_pass_noise`), so an input separated among others gives what it
        gives alone."""
        generator = torch.Generator().manual_seed(seed)
        per_draw: list[list[torch.Tensor]] = [[] for _ in range(draws)]
        for start in range(0, windows, max_batch):
            shape = self.model.one_pass_noise_shape(min(max_batch, windows - start), frames)
            for draw, noise in enumerate(one_pass_noise(shape, draws, generator)):
                per_draw[draw].append(noise)
        return [torch.cat(chunks) for chunks in per_draw]

    @torch.no_grad()
    def separate_latents(self, latents: list[torch.Tensor], seeds: list[int], steps: int = 50,
                         mode: str | None = None, alpha: float | None = None, draws: int | None = None,
                         window_frames: int | None = None, overlap_frames: int | None = None, max_batch: int = 16,
                         progress: bool = False) -> list[torch.Tensor]:
        """Mixture latents ``[C, T_i]`` of any lengths (one seed each) -> component latents ``[K, C, T_i]``.

        Long inputs are cut into windows (:meth:`_window_plan`) that run as batches of ``max_batch``; component k
        always comes from encoder k, so components stay consistent across windows. In the one-pass modes the
        windows of *all* inputs of the same length share those batches (each input keeps its own noise and its own
        blind residual choice: alone or among others, an input gets the same result); the sampler modes run one
        input at a time. ``mode``: see :meth:`Decomposer.separate` (default: ``diffusion.separation``); ``alpha``
        / ``draws`` for the one-pass modes (default: ``diffusion.one_pass_alpha`` / ``one_pass_draws``).
        ``progress``: a bar per window on stderr.
        """
        if len(latents) != len(seeds):
            raise ValueError(f"{len(latents)} inputs but {len(seeds)} seeds")
        diffusion = self.config.diffusion
        mode = self.resolve_mode(mode)
        alpha = self.resolve_alpha(alpha)
        draws = diffusion.one_pass_draws if draws is None else draws
        plans = [self._window_plan(latent.shape[-1], window_frames, overlap_frames) for latent in latents]
        pieces = [torch.stack([latent[:, s:s + window] for s in starts]) for latent, (starts, window, _) in
                  zip(latents, plans)]  # [N_i, C, W_i]
        window_parts: list[torch.Tensor | None] = [None] * len(latents)
        with _Bar(progress, sum(len(p) for p in pieces), "separate", "window") as bar:
            done = 0
            if mode not in ("one_pass", "one_pass_residual"):
                for i, (piece, seed) in enumerate(zip(pieces, seeds)):
                    window_parts[i] = self.model.separate_many(
                        piece, max_batch, steps, torch.Generator().manual_seed(seed), mode, alpha, draws,
                        residual_gain=diffusion.residual_gain,
                        on_progress=(lambda n, offset=done: bar.to(offset + n)) if progress else None)
                    done += len(piece)
            else:
                groups: dict[int, list[int]] = {}
                for i, piece in enumerate(pieces):
                    groups.setdefault(piece.shape[-1], []).append(i)
                for window, members in groups.items():
                    batch = torch.cat([pieces[i] for i in members])  # [sum N_i, C, W]
                    noises = [self._one_pass_noise(len(pieces[i]), window, seeds[i], draws, max_batch)
                              for i in members]
                    sizes = [len(pieces[i]) for i in members]
                    out = self.model.separate_many(  # the blind residual choice, once per input over its windows
                        batch, max_batch, steps, None, mode, alpha, draws,
                        on_progress=(lambda n, offset=done: bar.to(offset + n)) if progress else None,
                        noises=[torch.cat([n[d] for n in noises]) for d in range(draws)], groups=sizes,
                        residual_gain=diffusion.residual_gain)
                    done += len(batch)
                    for i, parts in zip(members, out.split(sizes)):
                        window_parts[i] = parts
        return [self._overlap_add(parts, *plan, latent.shape[-1])
                for parts, plan, latent in zip(window_parts, plans, latents)]

    def separate_latent(self, latent: torch.Tensor, steps: int = 50, seed: int = 0, window_frames: int | None = None,
                        overlap_frames: int | None = None, max_batch: int = 16, mode: str | None = None,
                        alpha: float | None = None, draws: int | None = None, progress: bool = False
                        ) -> torch.Tensor:
        """Mixture latent ``[C, T]`` of any length -> component latents ``[K, C, T]``: :meth:`separate_latents` of
        one input."""
        return self.separate_latents([latent], [seed], steps, mode, alpha, draws, window_frames, overlap_frames,
                                     max_batch, progress)[0]

    def separate(self, wave: np.ndarray | str, sample_rate: int | None = None, steps: int | None = None,
                 seed: int = 0, mode: str | None = None, post_filter: str | None = None,
                 progress: bool = False, shifts: int | None = None, alpha: float | None = None) -> Separation:
        """Audio ``[L]`` or ``[channels, L]`` at ``sample_rate`` (or the path / ``s3://`` URI of an audio file) ->
        :class:`Separation` with ``components [K, L]`` at the codec's rate (``L`` = the input's length after
        resampling) and their ``names``. The model works on the mono downmix. ``post_filter``: see
        :data:`ucr.config.POST_FILTERS` (default: ``diffusion.post_filter`` of the model's config). ``alpha``: the
        one-pass modes' blend level (default: ``diffusion.one_pass_alpha``). ``progress``: a bar per window on
        stderr."""
        if isinstance(wave, str):
            wave, sample_rate = audio.read(wave, mono=False)
        elif sample_rate is None:
            raise ValueError("separate(wave, sample_rate): give the sample rate of an array (or pass a file path)")
        return self.separate_batch([(wave, sample_rate)], [seed], steps, mode, post_filter, progress, shifts,
                                   alpha)[0]

    def separate_batch(self, inputs: list[tuple[np.ndarray, int]], seeds: list[int], steps: int | None = None,
                       mode: str | None = None, post_filter: str | None = None, progress: bool = False,
                       shifts: int | None = None, alpha: float | None = None) -> list[Separation]:
        """Several ``(audio [L] or [channels, L], sample_rate)`` inputs, one seed each, in shared decoder batches
        (:meth:`separate_latents`): each result equals :meth:`separate` of that input alone. ``shifts``: the shift
        trick's runs (:func:`average_over_shifts`; default ``diffusion.shifts``); ``alpha``: the one-pass blend
        level (default ``diffusion.one_pass_alpha``)."""
        steps, mode = self.resolve_steps(steps), self.resolve_mode(mode)
        shifts = self.config.diffusion.shifts if shifts is None else shifts
        monos = [self.prepare(wave, sample_rate) for wave, sample_rate in inputs]

        def separate_waves(mixtures: list[torch.Tensor]) -> list[torch.Tensor]:  # [L_i] each -> [K, L_i] each
            latents = [self.codec.encode(m[None, None].to(self.device))[0] for m in mixtures]  # [C, T_i]
            parts = self.separate_latents(latents, list(seeds), steps=steps, mode=mode, alpha=alpha,
                                          progress=progress)
            return [self.codec.decode_components(part[None], m[None].to(part.device),
                                                 self.config.diffusion.mask_power)[0, :, :m.shape[-1]].cpu()
                    for m, part in zip(mixtures, parts)]

        separated = average_over_shifts(separate_waves, [torch.from_numpy(mono) for mono in monos],
                                        self.codec.hop_length, shifts)
        out = []
        for mono, waves in zip(monos, separated):
            waves = baselines.post_filter(post_filter or self.config.diffusion.post_filter, mono, waves.numpy(),
                                          self.sample_rate)
            out.append(Separation(components=waves, sample_rate=self.sample_rate, steps=steps,
                                  names=self.component_names, mode=mode))
        return out

    # -- generation (needs the prior) ---------------------------------------------------------------------------------
    MAX_GENERATE_SECONDS = 60.0

    def _require_prior(self) -> None:
        if self.prior is None:
            raise ValueError("this model has no prior: train one with `ucr train-prior` and load its checkpoint")

    def _decode_z(self, z: torch.Tensor, steps: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``z [B, K, Cz, T]`` -> (component waves ``[B, K, L]``, mixture waves ``[B, L]``)."""
        parts, mixture = self.model.decode_components(z.to(self.device), steps=steps, generator=generator)
        B, K, C, T = parts.shape
        waves = self.codec.decode(parts.reshape(B * K, C, T).cpu()).reshape(B, K, -1)
        return waves.numpy(), self.codec.decode(mixture.cpu())[:, 0].numpy()

    def generate(self, n: int = 1, seconds: float = 5.0, seed: int = 0, steps: int | None = None,
                 prior_steps: int | None = None, progress: bool = False) -> dict:
        """Unconditional generation: the prior samples all K component latents, the decoder renders each, the
        mixture is their mean (the composition operator). Returns ``{"components": [n, K, L], "mixture": [n, L],
        "z": [n, K, Cz, T], "sample_rate"}``. Reproducible for a seed. ``progress``: a bar per sampler step."""
        self._require_prior()
        if not 1 <= n <= 64:
            raise ValueError(f"n must be in [1, 64], got {n}")
        if not 0.1 <= seconds <= self.MAX_GENERATE_SECONDS:
            raise ValueError(f"seconds must be in [0.1, {self.MAX_GENERATE_SECONDS:g}] (the prior generates a whole "
                             f"excerpt at once; generate several and concatenate for longer audio), got {seconds}")
        steps = self.resolve_steps(steps)
        generator = torch.Generator().manual_seed(seed)
        frames = self.codec.num_frames(int(round(seconds * self.sample_rate)))
        prior_steps = steps if prior_steps is None else self.resolve_steps(prior_steps, "prior_steps")
        with _Bar(progress, prior_steps + steps, "generate", "step") as bar:
            with iadb.step_listener(bar.steps(0)):
                z = self.prior.sample((n, frames), steps=prior_steps, generator=generator)
            with iadb.step_listener(bar.steps(prior_steps)):
                components, mixture = self._decode_z(z, steps, generator)
        length = int(round(seconds * self.sample_rate))
        return {"components": components[..., :length], "mixture": mixture[..., :length], "z": z.cpu(),
                "sample_rate": self.sample_rate}

    def component_latents(self, wave: np.ndarray, sample_rate: int) -> tuple[torch.Tensor, int]:
        """Audio -> (``z [1, K, Cz, T]``, length in samples at the codec rate)."""
        mono = self.prepare(wave, sample_rate)
        latent = self.codec.encode(torch.from_numpy(mono)[None, None]).to(self.device)  # [1, C, T]
        z = self.model.encode(latent)
        return z, len(mono)

    def vary(self, wave: np.ndarray, sample_rate: int, keep: list[int], seed: int = 0, steps: int | None = None,
             n: int = 1, progress: bool = False) -> dict:
        """Keep components ``keep`` of a real mixture and regenerate the others with the prior; ``n`` variations.
        ``progress``: a bar per sampler step."""
        self._require_prior()
        K = self.n_components
        if any(not 0 <= k < K for k in keep) or len(set(keep)) != len(keep):
            raise ValueError(f"keep={list(keep)}: list distinct components in 0..{K - 1} (this model has {K})")
        if len(keep) == K:
            raise ValueError(f"keep={list(keep)} keeps every component, which leaves nothing to vary; keep fewer")
        z, length = self.component_latents(wave, sample_rate)
        if length > self.MAX_GENERATE_SECONDS * self.sample_rate:
            raise ValueError(f"input longer than {self.MAX_GENERATE_SECONDS:g} s; cut it into excerpts")
        steps = self.resolve_steps(steps)
        generator = torch.Generator().manual_seed(seed)
        keep_mask = torch.zeros(n, self.n_components, dtype=torch.bool)
        keep_mask[:, keep] = True
        with _Bar(progress, 2 * steps, "vary", "step") as bar:
            with iadb.step_listener(bar.steps(0)):
                varied = self.prior.sample(z.expand(n, *z.shape[1:]), keep=keep_mask, steps=steps,
                                           generator=generator)
            with iadb.step_listener(bar.steps(steps)):
                components, mixture = self._decode_z(varied, steps, generator)
        return {"components": components[..., :length], "mixture": mixture[..., :length], "z": varied.cpu(),
                "original_z": z.cpu(), "sample_rate": self.sample_rate}

    def recompose(self, waves: list[tuple[np.ndarray, int]], take: dict[int, int], seed: int = 0,
                  steps: int | None = None, progress: bool = False) -> dict:
        """Swap components between mixtures: ``take[k] = i`` uses component k of input i. Inputs are cut to the
        shortest. No prior needed: the decoder renders the chosen z and the composition mixes them. ``progress``: a
        bar per sampler step."""
        if sorted(take) != list(range(self.n_components)):
            raise ValueError(f"take must name a source input for every component 0..{self.n_components - 1}, "
                             f"got {sorted(take)}")
        if any(not 0 <= i < len(waves) for i in take.values()):
            raise ValueError(f"take refers to inputs {sorted(set(take.values()))}, but {len(waves)} were given")
        encoded = [self.component_latents(wave, rate) for wave, rate in waves]
        frames = min(z.shape[-1] for z, _ in encoded)
        length = min(n for _, n in encoded)
        z = torch.stack([encoded[take[k]][0][0, k, :, :frames] for k in range(self.n_components)])[None]
        steps = self.resolve_steps(steps)
        with _Bar(progress, steps, "recompose", "step") as bar, iadb.step_listener(bar.steps(0)):
            components, mixture = self._decode_z(z, steps, torch.Generator().manual_seed(seed))
        return {"components": components[..., :length], "mixture": mixture[..., :length], "z": z.cpu(),
                "sample_rate": self.sample_rate}
