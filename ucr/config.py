"""Experiment configuration: frozen dataclasses, YAML presets, ``--set`` overrides, flat dicts.

Config is data. Every section is a frozen dataclass validated in ``__post_init__``; an invalid value raises a
``ValueError`` that names the field (``model.n_components``) and the allowed range. Presets are YAML files shipped in
``ucr/presets/`` that override the defaults section by section; command lines add ``--set section.field=value``.
``to_flat_dict`` / ``from_flat_dict`` give the ``{"model.n_components": 2, ...}`` form that MLflow and Tune use.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

# ----------------------------------------------------------------------------------------------------------------------
# validation helpers (one place: every section uses them, so messages read the same everywhere)


def _in_range(name: str, value: float, low: float | None = None, high: float | None = None,
              low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name} = {value!r} is out of range; allowed: {left}{lo}, {hi}]")


def _is_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    _in_range(name, value, low, high)


def _one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} = {value!r} is not allowed; choose one of {list(allowed)}")


def _positive_ints(name: str, values: Sequence[int], min_len: int = 1) -> None:
    if len(values) < min_len or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a list of at least {min_len} positive integers, got {list(values)!r}")


# ----------------------------------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class CodecConfig:
    """The frozen latent codec (part 1)."""

    # "encodec" (pretrained EnCodec 24 kHz via transformers), "mdct" (exact, no download), "stft_mag" (STFT magnitude,
    # lossy) or "stft_if" (compressed STFT magnitude + instantaneous frequency: phase-coherent, exact)
    name: str = "mdct"
    weights: str = "facebook/encodec_24khz"  # EnCodec weights: hub id, local folder, s3:// folder, or "random"
    latent_kind: str = "quantized"  # EnCodec: "quantized" (RVQ codes dequantized, the paper) or "continuous"
    bandwidth: float = 24.0  # EnCodec kbps for the quantized latent; 24 kbps = 32 codebooks (the paper)
    segment_seconds: float = 20.0  # long audio is encoded/decoded in segments of this length (bounded memory)
    normalize_latents: bool = False  # standardisation with statistics computed from the training data
    # what normalize_latents standardises: "channel" (each latent channel by its own mean / std) or "global" (one
    # mean / std over all channels, so the channels keep their relative energies)
    normalize_scope: str = "channel"
    # audio samples per latent frame of the analytic codecs (mdct, stft_mag, stft_if): 320 = EnCodec's 75 Hz (the
    # default); a longer hop trades time resolution for frequency resolution (bins of sample_rate / (2 hop) Hz).
    # EnCodec's framing is fixed at 320
    hop_length: int = 320
    # a codec trained here (`ucr codec train`: transformers' EncodecModel, 24 kHz mono, 75 Hz, continuous latents):
    # encoder / decoder base width, LSTM layers, latent channels, excerpt length (s), weight of the waveform L1 term,
    # and the gain the audio is multiplied by in training (mixtures sit at RMS ~0.05, where the initial conv biases
    # swamp the signal and the codec learns one input-independent output; x20 ~ unit level. The export folds the gain
    # into the first and last convolutions, so the saved model takes audio at its own level; docs/results/codecs)
    train_filters: int = 16
    train_lstm_layers: int = 1
    train_latent_channels: int = 64
    train_segment_seconds: float = 1.0
    train_waveform_weight: float = 1.0
    train_input_gain: float = 20.0

    def __post_init__(self) -> None:
        _one_of("codec.name", self.name, list(CODEC_NAMES))
        _is_int("codec.train_filters", self.train_filters, 1, 512)
        _is_int("codec.train_lstm_layers", self.train_lstm_layers, 0, 4)
        _is_int("codec.train_latent_channels", self.train_latent_channels, 1, 1024)
        _in_range("codec.train_segment_seconds", self.train_segment_seconds, 0.05, 30.0)
        _in_range("codec.train_waveform_weight", self.train_waveform_weight, 0.0, 100.0)
        _in_range("codec.train_input_gain", self.train_input_gain, 0.0, 1000.0, low_open=True)
        _is_int("codec.hop_length", self.hop_length, 32, 8192)
        if self.hop_length % 2:
            raise ValueError(f"codec.hop_length must be even, got {self.hop_length}")
        if self.name == "encodec" and self.hop_length != 320:
            raise ValueError(f"codec.hop_length is fixed at 320 for EnCodec (got {self.hop_length}: the preset's "
                             f"framing of the analytic codecs); add --set codec.hop_length=320, and scale "
                             f"data.crop_frames with it (x {self.hop_length / 320:g} frames for the same crop length)")
        _one_of("codec.latent_kind", self.latent_kind, ["quantized", "continuous"])
        _one_of("codec.normalize_scope", self.normalize_scope, ["channel", "global"])
        _one_of("codec.bandwidth", self.bandwidth, [1.5, 3.0, 6.0, 12.0, 24.0])
        _in_range("codec.segment_seconds", self.segment_seconds, 1.0, 600.0)
        if not isinstance(self.weights, str) or not self.weights:
            raise ValueError("codec.weights must be a hub id, a folder, an s3:// URI or 'random'")


@dataclass(frozen=True)
class DataConfig:
    """Which audio, which sources, how it is cut (part 2)."""

    root: str = "data/synth_drums_bass"  # dataset folder or s3:// URI in the Slakh2100 (or MUSDB18-HQ) layout
    layout: str = "slakh"  # "slakh" or "musdb"
    sources: tuple[str, ...] = ("Drums", "Bass")  # Slakh inst_class names (or MUSDB stem names)
    mix: str = "mean"  # training mixture = mean of the sources (the paper) or their "sum"
    sample_rate: int = 24000  # audio is resampled to the codec's rate; kept here so caches can check it
    chunk_seconds: float = 7.0  # 7 s = 525 latent frames at 75 Hz (the paper)
    silence_rms: float = 0.01  # drop chunks where any source's RMS is below this (the paper's filter); `ucr codec
    # train` redraws mixture excerpts quieter than this (a silent one diverges its spectral-convergence loss)
    # delay each chunk's start by 0 <= d < start_jitter samples (fixed per track and chunk; 0 = off, the paper).
    # Rendered MIDI puts every onset on the synthesiser's 64-sample block grid, which a codec hop of 320 samples
    # keeps in step with the latent frames; a model learns that grid and fails on audio off it (research log W).
    # One hop (320) puts the frames at every phase of the grid (ours)
    start_jitter: int = 0
    crop_frames: int = 512  # training crops in latent frames (the paper)
    # tracks per latent-cache shard: the unit of parallel encoding (one Ray task each) and of streaming at training;
    # part of a cache's key, so `ucr data encode` and the encode job share caches when they agree on it
    tracks_per_shard: int = 4
    cache: str = ""  # latent cache URI for `ucr train` when --data is not given
    synthetic: str = ""  # "" = real data at `root`; "drums_bass" or "chorales" = rendered by the data stage
    synthetic_tracks: int = 40  # tracks to render (split 80/10/10 into train/validation/test)
    synthetic_seconds: float = 20.0  # length of each rendered track
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        _one_of("data.synthetic", self.synthetic, ["", "drums_bass", "chorales"])
        _is_int("data.synthetic_tracks", self.synthetic_tracks, 3, 100000)
        _in_range("data.synthetic_seconds", self.synthetic_seconds, 1.0, 3600.0)
        _is_int("data.synthetic_seed", self.synthetic_seed, 0, 2**31 - 1)
        _one_of("data.layout", self.layout, ["slakh", "musdb"])
        _one_of("data.mix", self.mix, ["mean", "sum"])
        if not self.sources or not all(isinstance(s, str) and s for s in self.sources):
            raise ValueError(f"data.sources must be a non-empty list of names, got {self.sources!r}")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"data.sources has duplicates: {list(self.sources)}")
        _is_int("data.sample_rate", self.sample_rate, 8000, 192000)
        _in_range("data.chunk_seconds", self.chunk_seconds, 0.5, 60.0)
        _in_range("data.silence_rms", self.silence_rms, 0.0, 1.0)
        _is_int("data.start_jitter", self.start_jitter, 0, 10**7)
        _is_int("data.crop_frames", self.crop_frames, 8, 100000)
        _is_int("data.tracks_per_shard", self.tracks_per_shard, 1, 100000)


@dataclass(frozen=True)
class ModelConfig:
    """The decomposer: K unshared encoders, one shared U-Net decoder, mean composition (part 3)."""

    n_components: int = 2  # K
    encoder_channels: tuple[int, ...] = (256, 512)  # hidden widths of each component encoder (C -> ... -> 1)
    component_channels: int = 1  # channels of each z_k (the paper's bottleneck: 1 x T)
    unet_channels: tuple[int, ...] = (128, 128, 256, 256, 512)  # U-Net width per level (paper); stride 2 between
    blocks_per_level: int = 1  # residual blocks per U-Net level
    attention_levels: tuple[int, ...] = (4,)  # U-Net levels (0-based) with self-attention; paper: deepest only
    attention_heads: int = 4
    embedding_dim: int = 128  # noise-level embedding (sinusoidal + MLP), injected by FiLM
    dropout: float = 0.1
    groupnorm_groups: int = 8
    # decoder training draws alpha ~ U(0, train_alpha_max); the paper: 1. Below 1 the decoder never sees a nearly
    # clean input, where copying it is the easy (redundant) answer, so z must carry the decomposition; only the
    # one-pass separation modes (alpha* <= train_alpha_max) are then in the range it was trained on
    train_alpha_max: float = 1.0
    # ... drawn as alpha = train_alpha_max * u ** train_alpha_power, u ~ U(0, 1) (ours; the paper: 1, uniform). Above 1
    # the draw favours low alpha, where z must carry the decomposition, and still covers the range the sampler runs
    train_alpha_power: float = 1.0
    # weight of a penalty on the squared correlation between the component latents z_k (ours; the paper: 0). A
    # symmetric, redundant decomposition (every z_k the same code) is free under the paper's loss; this makes it cost
    z_decorrelation: float = 0.0
    # weight of a penalty on the squared correlation between the decoded parts (each component's x0 prediction, in
    # the loss's channel weighting; ours). Independent sources are nearly uncorrelated, a redundant split (every
    # part the mixture) fully: this makes the redundant split cost where z_decorrelation only touches the codes
    part_decorrelation: float = 0.0
    # weight of each latent channel in the x0 loss, proportional to its training variance to this power (ours; the
    # paper: 0 = every standardised channel alike). 1 makes the loss the raw-latent MSE, which for the orthogonal MDCT
    # is the waveform MSE that SI-SDR scores: with per-channel standardisation the 8 lowest of 320 MDCT channels hold
    # ~90 % of drums + bass energy but 2.5 % of the paper's loss. The diffusion itself stays per channel
    loss_channel_power: float = 0.0
    # with loss_channel_power = p > 0: the share of that weighting in each channel's loss weight, the rest uniform
    # (weight_c = (1 - mix) + mix * var_c^p / mean(var^p); mean 1). 1 = all var^p; small values keep the paper's
    # uniform weight, under which the component split emerges, and add precision where the energy is (ours)
    loss_channel_mix: float = 1.0
    # time resolution of z: each z_k is averaged over blocks of this many frames (and held constant within a block)
    # before it conditions the decoder; 1 = the codec's frame rate (the paper). Coarser z carries less detail, so the
    # decoder must take the detail from its noisy input and z can only say which source (ours)
    component_stride: int = 1
    # per-component strides (one per z_k; empty = component_stride for all): an asymmetry put in on purpose, e.g.
    # [1, 8] lets z_0 follow transients while z_1 can only follow slow changes (ours)
    component_strides: tuple[int, ...] = ()
    # the same asymmetry as one number, for any K (ours): strides spread geometrically from 1 (z_0) to this
    # (z_{K-1}), rounded: 8 gives [1, 8] for K = 2, [1, 3, 8] for K = 3, [1, 2, 4, 8] for K = 4; 1 = off
    slowest_component_stride: int = 1
    # an asymmetry in frequency (ours): one [low_hz, high_hz) per component; encoder k reads only the latent channels
    # whose frequency lies in its band (codecs whose channels are frequencies: mdct, stft_mag, stft_if), so z_k can
    # only describe what sounds there, e.g. [[250, 12000], [0, 250]] for a high and a low voice. Empty = every
    # encoder reads every channel (the paper)
    component_bands: tuple[tuple[float, ...], ...] = ()
    # weight of the remix-consistency loss (ours; the paper: 0). The model, without gradients, separates the batch
    # in one pass at remix_alpha (blind residual rule); component k of example b is paired with component j of other
    # examples (an independent shuffle per component) into new mixtures, and the model must give those components
    # back from their mixture. A redundant decomposition (every z_k the same code) cannot: it is what this penalises
    remix_weight: float = 0.0
    remix_alpha: float = 0.3  # alpha* of the one-pass separation that makes the remix targets
    # who separates for the remix targets: "self" (the model being trained, without gradients) or "initial" (a frozen
    # copy of the train.init_from weights: a fixed teacher, as in RemixIT's first round)
    remix_teacher: str = "self"

    def __post_init__(self) -> None:
        _is_int("model.n_components", self.n_components, 1, 16)
        _in_range("model.remix_weight", self.remix_weight, 0.0)
        _in_range("model.remix_alpha", self.remix_alpha, 0.0, 1.0)
        if self.remix_teacher not in ("self", "initial"):
            raise ValueError(f"model.remix_teacher = {self.remix_teacher!r}; choose self or initial")
        _is_int("model.component_stride", self.component_stride, 1, 256)
        for stride in self.component_strides:
            _is_int("model.component_strides[]", stride, 1, 256)
        if self.component_strides and len(self.component_strides) != self.n_components:
            raise ValueError(f"model.component_strides {list(self.component_strides)} must give one stride per "
                             f"component (model.n_components = {self.n_components}), or be empty (for any K, "
                             f"set model.slowest_component_stride instead)")
        _is_int("model.slowest_component_stride", self.slowest_component_stride, 1, 256)
        given = [name for name, on in (("model.component_stride", self.component_stride > 1),
                                       ("model.component_strides", bool(self.component_strides)),
                                       ("model.slowest_component_stride", self.slowest_component_stride > 1)) if on]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} both set the strides of z: keep one")
        if self.component_bands and len(self.component_bands) != self.n_components:
            raise ValueError(f"model.component_bands gives {len(self.component_bands)} bands for model.n_components = "
                             f"{self.n_components}: give one [low_hz, high_hz] per component, or none")
        for band in self.component_bands:
            if len(band) != 2 or not 0.0 <= band[0] < band[1]:
                raise ValueError(f"model.component_bands: each band is [low_hz, high_hz] with 0 <= low < high, got "
                                 f"{list(band)}")
        _positive_ints("model.encoder_channels", self.encoder_channels, min_len=0)
        _is_int("model.component_channels", self.component_channels, 1, 64)
        _positive_ints("model.unet_channels", self.unet_channels, min_len=1)
        _is_int("model.blocks_per_level", self.blocks_per_level, 1, 8)
        for level in self.attention_levels:
            _is_int("model.attention_levels[]", level, 0, len(self.unet_channels) - 1)
        _is_int("model.attention_heads", self.attention_heads, 1, 64)
        _is_int("model.embedding_dim", self.embedding_dim, 8, 4096)
        _in_range("model.dropout", self.dropout, 0.0, 0.9)
        _is_int("model.groupnorm_groups", self.groupnorm_groups, 1, 64)
        _in_range("model.train_alpha_max", self.train_alpha_max, 0.0, 1.0, low_open=True)
        _in_range("model.train_alpha_power", self.train_alpha_power, 0.25, 8.0)
        _in_range("model.z_decorrelation", self.z_decorrelation, 0.0, 100.0)
        _in_range("model.part_decorrelation", self.part_decorrelation, 0.0, 100.0)
        _in_range("model.loss_channel_power", self.loss_channel_power, 0.0, 2.0)
        _in_range("model.loss_channel_mix", self.loss_channel_mix, 0.0, 1.0)
        bad = [c for c in self.unet_channels if c % self.groupnorm_groups]
        if bad:
            raise ValueError(f"model.unet_channels {list(self.unet_channels)} must all be divisible by "
                             f"model.groupnorm_groups = {self.groupnorm_groups}")

    def strides(self) -> tuple[int, ...]:
        """One stride per component z_k, from whichever of ``component_strides``, ``slowest_component_stride`` and
        ``component_stride`` is set (all 1 when none is: the paper)."""
        K = self.n_components
        if self.component_strides:
            return tuple(self.component_strides)
        if self.slowest_component_stride > 1 and K > 1:
            return tuple(round(self.slowest_component_stride ** (k / (K - 1))) for k in range(K))
        return (self.component_stride,) * K


# How a mixture is split into components (ucr.decomposer.Decomposer.separate):
#   independent        the paper: the sampler runs the decoder on each z_k alone, from noise
#   mixture_consistent the sampler, with the K predictions projected onto the observed mixture at every step
#   one_pass           the decoder applied once to the observed mixture blended with noise at alpha* (its training
#                      input), noise draws averaged
#   one_pass_residual  one_pass, then the least trusted component (blind rule: lowest coherence with the mixture)
#                      is replaced by the mixture residual, so the composition equals the mixture exactly
CODEC_NAMES = ("encodec", "mdct", "stft_mag", "stft_if")  # ucr.codec.build_codec makes each
RESIDUAL_GAINS = ("least_squares", "unit")
SEPARATION_MODES = ("independent", "mixture_consistent", "one_pass", "one_pass_residual")
# What is done to the decoded component waveforms (ucr.pipeline.post_filter):
#   none    the decoder's output as is
#   wiener  soft masks |c_k|^2 / sum_j |c_j|^2 of the decoded components applied to the mixture's STFT (ours)
POST_FILTERS = ("none", "wiener")


@dataclass(frozen=True)
class DiffusionConfig:
    """IADB (Heitz et al. 2023) settings shared by the decoder and the prior."""

    sampler_steps: int = 50  # deterministic sampler steps at inference (the paper: 50)
    alpha_schedule: str = "uniform"  # training distribution of alpha: "uniform" (the paper)
    separation: str = "independent"  # one of SEPARATION_MODES; "independent" is the paper's
    one_pass_alpha: float = 0.3  # one-pass modes: the blend level alpha* at which the observed mixture is noised
    one_pass_draws: int = 4  # one-pass modes: noise draws averaged, in antithetic pairs (eps, -eps)
    # one_pass_residual: how the kept components are scaled before the residual is taken: "least_squares" (each
    # fitted to the mixture: a shrunk one-pass estimate is rescaled) or "unit" (as decoded; better after the refine
    # phase on some models, not all: docs/results/research R)
    residual_gain: str = "least_squares"
    post_filter: str = "none"  # one of POST_FILTERS, on the decoded waveforms; "none" is the paper's
    # codecs that decode separations as masks on the mixture (stft_mag): the components' magnitudes are raised to
    # this power before the ratio masks are formed (1: ratio of magnitudes; 2: of powers, Wiener-like; ours)
    mask_power: float = 1.0
    # the shift trick (ours here; a standard test-time average in source separation): each separation runs this many
    # times on the input circularly delayed by multiples of hop / shifts samples, delays undone, results averaged.
    # Each run frames the audio at other places, so framing errors average out; costs shifts x the decoder passes
    shifts: int = 1

    def __post_init__(self) -> None:
        _is_int("diffusion.sampler_steps", self.sampler_steps, 1, 10000)
        _is_int("diffusion.shifts", self.shifts, 1, 64)
        _one_of("diffusion.alpha_schedule", self.alpha_schedule, ["uniform"])
        _one_of("diffusion.separation", self.separation, SEPARATION_MODES)
        _one_of("diffusion.post_filter", self.post_filter, POST_FILTERS)
        _in_range("diffusion.one_pass_alpha", self.one_pass_alpha, 0.0, 1.0)
        _is_int("diffusion.one_pass_draws", self.one_pass_draws, 1, 256)
        _one_of("diffusion.residual_gain", self.residual_gain, list(RESIDUAL_GAINS))
        _in_range("diffusion.mask_power", self.mask_power, 0.25, 8.0)


@dataclass(frozen=True)
class TrainConfig:
    """The framework-agnostic training loop (part 3); Ray Train wraps the same loop (part 5)."""

    steps: int = 267000  # optimiser steps (the paper: ~500 epochs of Slakh drums+bass)
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    # the last decay_steps steps lower the learning rate linearly to 0 (warmup-stable-decay; 0 = constant after the
    # warmup, the paper). With train.refine_at, decay_steps = steps - refine_at anneals the refine phase (ours)
    decay_steps: int = 0
    grad_clip: float = 0.0  # 0 = no clipping (the paper)
    ema_decay: float = 0.0  # 0 = no EMA (the paper)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:N"
    num_workers: int = 0  # DataLoader workers
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    max_minutes: float = 0.0  # stop early after this wall time (0 = no limit); the checkpoint is still written
    # warm start: a checkpoint (file, run folder or s3:// URI) of the same kind and architecture whose weights (EMA
    # when present) initialise the model; the optimiser, step and RNG start fresh. "" = random initial weights
    init_from: str = ""
    # with init_from: keep the component encoders (mixture -> z_k) as loaded and train only the decoder, so that a
    # fine-tune (e.g. under another loss weighting) cannot move the split the encoders learned (ours)
    freeze_encoders: bool = False
    # a second phase in the same run (ours; 0 = one phase, the paper): from this step on, the component encoders are
    # held (the split they learned is kept) and the decoder is trained under the loss weighting
    # train.refine_channel_power (channel c weighted by var_c^p; 1 = the raw-latent MSE, the waveform MSE that
    # SI-SDR scores). The paper's uniform loss makes the split emerge but gives the few loud channels ~2.5 % of
    # the loss; the weighted loss alone never splits (docs/results/research, sections M-P). A supervised reference
    # with refine_at > 0 trains under refine_channel_power throughout (the loss the refined decoder ends with)
    refine_at: int = 0
    refine_channel_power: float = 1.0

    def __post_init__(self) -> None:
        _is_int("train.steps", self.steps, 1, 10**9)
        _is_int("train.refine_at", self.refine_at, 0, 10**9)
        _in_range("train.refine_channel_power", self.refine_channel_power, 0.0, 2.0)
        if self.freeze_encoders and not self.init_from:
            raise ValueError("train.freeze_encoders needs train.init_from (the weights whose encoders are kept)")
        _is_int("train.batch_size", self.batch_size, 1, 65536)
        _in_range("train.lr", self.lr, 0.0, 1.0, low_open=True)
        _in_range("train.weight_decay", self.weight_decay, 0.0, 1.0)
        _is_int("train.warmup_steps", self.warmup_steps, 0, 10**9)
        _is_int("train.decay_steps", self.decay_steps, 0, 10**9)
        if self.decay_steps > self.steps:
            raise ValueError(f"train.decay_steps = {self.decay_steps} is longer than the run (train.steps = "
                             f"{self.steps}); lower it to at most train.steps")
        _in_range("train.grad_clip", self.grad_clip, 0.0)
        _in_range("train.ema_decay", self.ema_decay, 0.0, 0.99999)
        _is_int("train.seed", self.seed, 0, 2**31 - 1)
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ValueError(f"train.device = {self.device!r} is not allowed; choose auto, cpu, cuda, cuda:N or mps")
        _is_int("train.num_workers", self.num_workers, 0, 64)
        _is_int("train.log_every", self.log_every, 1, 10**9)
        _is_int("train.checkpoint_every", self.checkpoint_every, 1, 10**9)
        _is_int("train.keep_checkpoints", self.keep_checkpoints, 1, 1000)
        _in_range("train.max_minutes", self.max_minutes, 0.0)


@dataclass(frozen=True)
class PriorConfig:
    """The masked diffusion prior over the stacked component latents (part 4)."""

    unet_channels: tuple[int, ...] = (64, 128, 256, 512)  # after the K input channels (the paper: [K,64,128,256,512])
    attention_levels: tuple[int, ...] = (3,)
    dropout: float = 0.1
    all_masked_prob: float = 0.5  # probability of the all-masked (unconditional) mask; others uniform (the intent)
    steps: int = 100000
    batch_size: int = 64
    lr: float = 1e-4

    def __post_init__(self) -> None:
        _positive_ints("prior.unet_channels", self.unet_channels)
        for level in self.attention_levels:
            _is_int("prior.attention_levels[]", level, 0, len(self.unet_channels) - 1)
        _in_range("prior.dropout", self.dropout, 0.0, 0.9)
        _in_range("prior.all_masked_prob", self.all_masked_prob, 0.0, 1.0)
        _is_int("prior.steps", self.steps, 1, 10**9)
        _is_int("prior.batch_size", self.batch_size, 1, 65536)
        _in_range("prior.lr", self.lr, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one experiment needs. Build with :func:`load_config`."""

    name: str = "default"
    codec: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValueError(f"name = {self.name!r}: use letters, digits, '_', '-' or '.'")
        frame_rate = self.data.sample_rate / self.codec.hop_length  # latent frames per second
        chunk_frames = round(self.data.chunk_seconds * frame_rate)
        if self.data.crop_frames > chunk_frames and self.data.chunk_seconds > 0:
            raise ValueError(f"data.crop_frames = {self.data.crop_frames} is longer than a chunk "
                             f"({self.data.chunk_seconds} s = {chunk_frames} frames at {frame_rate:g} Hz, "
                             f"codec.hop_length {self.codec.hop_length})")
        downsample = 2 ** (len(self.model.unet_channels) - 1)
        if self.data.crop_frames % downsample:
            raise ValueError(f"data.crop_frames = {self.data.crop_frames} must be divisible by {downsample} "
                             f"(2 ** (len(model.unet_channels) - 1))")

    # -- conversions ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples become lists) — what YAML files and checkpoints hold."""
        return _to_plain(dataclasses.asdict(self))

    def to_flat_dict(self) -> dict[str, Any]:
        """``{"model.n_components": 2, ...}``; lists stay lists (MLflow params, Tune spaces)."""
        flat: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                for sub, subvalue in value.items():
                    flat[f"{key}.{sub}"] = subvalue
            else:
                flat[key] = value
        return flat

    @classmethod
    def from_dict(cls, nested: Mapping[str, Any]) -> "ExperimentConfig":
        return _build(cls, nested, prefix="")

    @classmethod
    def from_flat_dict(cls, flat: Mapping[str, Any]) -> "ExperimentConfig":
        return cls.from_dict(_unflatten(flat))

    def replace(self, **flat_overrides: Any) -> "ExperimentConfig":
        """A copy with ``{"model.n_components": 3}``-style overrides applied and validated."""
        merged = self.to_flat_dict()
        for key, value in flat_overrides.items():
            _check_key(key)
            merged[key] = value
        return ExperimentConfig.from_flat_dict(merged)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig) if f.name != "name"}


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(ExperimentConfig)
    return {name: hints[name] for name in SECTIONS}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def coerce_value(name: str, hint: Any, value: Any, from_text: bool = False) -> Any:
    """A YAML / CLI value into the declared field type ``hint`` (ints for floats, lists for tuples, ``X | None``
    takes None). ``from_text``: every value may arrive as a string (``serve run ... key=value``), so "true" / "3" /
    "2.5" become bool / int / float. The one coercion of settings in the project (the config, the Serve settings)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = options[0] if len(options) == 1 else hint
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{name} must be a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(hint)
        return tuple(coerce_value(f"{name}[]", item_type, v, from_text) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if hint is int and from_text and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if hint is bool and from_text and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "false", "0", "no"):
            return lowered in ("true", "1", "yes")
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def build_settings(cls: type, values: Mapping[str, Any] | None, what: str, from_text: bool = False) -> Any:
    """A flat settings dataclass from a mapping: unknown keys named with the valid ones, values coerced
    (:func:`coerce_value`). ``what`` names the settings in messages (``what.key``)."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {unknown}; valid: {valid}")
    return cls(**{key: coerce_value(f"{what}.{key}", hints[key], value, from_text) for key, value in values.items()})


def _build(cls: type, nested: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(nested, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {nested!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(nested) - set(valid))
    if unknown:
        raise ValueError(f"unknown config key(s) {[prefix + u for u in unknown]}; valid keys here: "
                         f"{[prefix + v for v in valid]}")
    kwargs: dict[str, Any] = {}
    for key, value in nested.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = coerce_value(prefix + key, hint, value)
    return cls(**kwargs)


def _check_key(key: str) -> None:
    if key == "name":
        return
    section, _, sub = key.partition(".")
    classes = _section_classes()
    if section not in classes or not sub:
        raise ValueError(f"unknown config key {key!r}; keys look like 'section.field' with section in "
                         f"{['name'] + list(classes)}")
    valid = [f.name for f in dataclasses.fields(classes[section])]
    if sub not in valid:
        raise ValueError(f"unknown config key {key!r}; valid fields of {section!r}: {valid}")


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        _check_key(key)
        if "." in key:
            section, sub = key.split(".", 1)
            nested.setdefault(section, {})[sub] = value
        else:
            nested[key] = value
    return nested


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------------------------------
# presets and overrides


def list_presets() -> list[str]:
    """Names of the presets shipped in ``ucr/presets``."""
    folder = resources.files("ucr") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_preset(preset: str) -> dict[str, Any]:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        if preset not in list_presets():
            raise ValueError(f"unknown preset {preset!r}; shipped presets: {list_presets()} "
                             f"(or give a path to a .yaml file)")
        text = (resources.files("ucr") / "presets" / f"{preset}.yaml").read_text()
    loaded = yaml.safe_load(text) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"preset {preset!r} must be a YAML mapping of sections")
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.n_components=3"`` -> ``("model.n_components", 3)``; values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.field=value (e.g. model.n_components=3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    _check_key(key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"override {text!r}: cannot parse value {raw!r} ({err})") from None
    return key, value


def load_config(preset: str = "demo", overrides: Sequence[str] | Mapping[str, Any] = ()) -> ExperimentConfig:
    """A preset (shipped name or YAML path) with overrides applied, validated.

    ``overrides`` is either ``["model.n_components=3", ...]`` (CLI form) or ``{"model.n_components": 3}``.
    """
    nested = _read_preset(preset)
    pairs = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    flat_updates: dict[str, Any] = {}
    for key, value in pairs:
        _check_key(key)
        flat_updates[key] = value
    nested = _deep_merge(nested, _unflatten(flat_updates))
    return ExperimentConfig.from_dict(nested)
