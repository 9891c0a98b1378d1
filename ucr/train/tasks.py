"""Builders that turn an ExperimentConfig + a latent cache into a ready :class:`Trainer` (decomposer, supervised
reference). The CLI, the Ray Train workers and the Tune trials all call these: one place for the set-up."""

from __future__ import annotations

import torch

from ucr import checkpoint as ckpt
from ucr.codec import channel_frequencies
from ucr.data.latents import LatentCache, resolve_cache
from ucr.decomposer import build_decomposer
from ucr.device import resolve_device
from ucr.train.loop import Hooks, Trainer


def open_training_cache(cache_uri: str, config) -> LatentCache:
    """The training split's cache, refused when its chunks are shorter than a crop or, for the analytic codecs
    (cheap to build), when it was encoded with another codec than ``config.codec`` (e.g. another hop): a model
    trained on it would not load in its own config's codec. EnCodec caches are checked when the model is loaded."""
    cache = LatentCache(resolve_cache(cache_uri, "train"))
    if config.codec.name != "encodec":
        from ucr.codec import build_codec

        cache.require_codec(build_codec(config.codec).fingerprint,
                            f"this run (codec.name {config.codec.name}, codec.hop_length {config.codec.hop_length})")
    if cache.frames_per_chunk < config.data.crop_frames:
        raise ValueError(f"data.crop_frames = {config.data.crop_frames} but the cache at {cache_uri} holds chunks of "
                         f"{cache.frames_per_chunk} frames; lower data.crop_frames or re-encode with longer chunks")
    return cache


def normalization_stats(cache_stats, codec_config):
    """The statistics the model standardises its latents with: ``None`` (no normalisation), the cache's per-channel
    statistics, or their pooled (one value for all channels) form, as ``codec.normalize_latents`` /
    ``codec.normalize_scope`` say."""
    if not codec_config.normalize_latents:
        return None
    return cache_stats.pooled() if codec_config.normalize_scope == "global" else cache_stats


def build_decomposer_trainer(config, cache_uri: str, run_uri: str, supervised: bool = False,
                             device: torch.device | None = None, rank: int = 0, world_size: int = 1,
                             hooks: Hooks | None = None, progress: bool = True, wrap=None) -> Trainer:
    """A :class:`Trainer` for the decomposer (or, with ``supervised``, its supervised reference).

    ``wrap(model) -> model`` lets the caller wrap the module (DistributedDataParallel) after it is on its device.
    Each of ``world_size`` ranks draws its own ``batch_size // world_size`` examples per step.
    """
    cache = open_training_cache(cache_uri, config)
    stats = normalization_stats(cache.stats, config.codec)
    if supervised and config.model.n_components != len(cache.sources):
        raise ValueError(f"the supervised reference needs model.n_components = {len(cache.sources)} "
                         f"(the number of sources {list(cache.sources)})")
    device = device or resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)  # the initial weights
    model = build_decomposer(config.model, cache.channels, stats, channel_frequencies(config.codec))
    if supervised and config.train.refine_at:  # the reference trains under the loss the refined decoder ends with
        model.loss_channel_power = config.train.refine_channel_power
    if config.train.init_from:
        warm_start(model, config.train.init_from, supervised)
    model = model.to(device)
    if config.model.remix_weight > 0 and config.model.remix_teacher == "initial":
        if not config.train.init_from:
            raise ValueError("model.remix_teacher = initial needs train.init_from (the teacher's weights)")
        import copy

        model.set_remix_teacher(copy.deepcopy(model))
    if wrap is not None:
        model = wrap(model)
    per_rank = max(1, config.train.batch_size // world_size)
    keys = ("mixture", "stems") if supervised else "mixture"
    data_seed = config.train.seed * 1000 + rank
    window = None if cache.num_chunks * cache.channels * cache.frames_per_chunk * 4 < 2**31 else 8

    def batch_fn(step: int):
        return cache.sample_batch(step, per_rank, config.data.crop_frames, seed=data_seed, key=keys,
                                  shard_window=window)

    schedule = encoder_schedule(getattr(model, "module", model), config.train, config.model.loss_channel_power,
                                supervised)
    extra = {"kind": "supervised" if supervised else "decomposer", "config": config.to_dict(),
             "stats": stats.to_dict() if stats else None, "codec": cache.manifest["codec"],
             "sources": list(cache.sources), "cache": cache_uri}
    return Trainer(model, batch_fn, config.train, run_uri, extra, device=device, rank=rank, world_size=world_size,
                   hooks=hooks, progress=progress, schedule=schedule)


def encoder_schedule(model, train_config, power: float, supervised: bool = False):
    """The :class:`ucr.train.loop.Trainer` schedule (step -> parameters held) of ``train.freeze_encoders`` (the
    component encoders held at every step) and ``train.refine_at`` (ours: before that step the whole model trains
    under ``loss_channel_power = power``; from it on the encoders are held and the loss weighs channels by
    ``var ** train.refine_channel_power``; not for the supervised reference). None when neither applies."""
    refine_at = 0 if supervised else train_config.refine_at
    if not (train_config.freeze_encoders or refine_at):
        return None
    encoders = tuple(model.encoders.parameters())

    def schedule(step: int):
        refining = bool(refine_at) and step >= refine_at
        if refine_at:
            model.loss_channel_power = train_config.refine_channel_power if refining else power
        return encoders if train_config.freeze_encoders or refining else ()

    return schedule


def warm_start(model, checkpoint_uri: str, supervised: bool = False) -> None:
    """``train.init_from``: load the weights (EMA when present) of a decomposer / supervised checkpoint into
    ``model``, refusing one of another kind or architecture with a sentence that says which."""

    state = decomposer_state(ckpt.load(checkpoint_uri))
    kind = "supervised" if supervised else "decomposer"
    if state["kind"] != kind:
        raise ValueError(f"train.init_from = {checkpoint_uri} is a {state['kind']} checkpoint; this run trains a "
                         f"{kind}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"train.init_from = {checkpoint_uri} holds weights of another architecture (its model "
                         f"section must match this run's): {str(err).splitlines()[0]}") from None


def decomposer_state(payload: dict) -> dict:
    """The part of a decomposer checkpoint that inference needs (EMA weights when present)."""
    if payload.get("kind") not in ("decomposer", "supervised"):
        raise ValueError(f"expected a decomposer checkpoint, got kind {payload.get('kind')!r}")
    return {key: payload.get(key) for key in ("kind", "config", "stats", "codec", "sources", "step")} | {
        "model": ckpt.inference_weights(payload)}


def component_latents(decomposer, cache: LatentCache, batch_size: int = 32) -> torch.Tensor:
    """z of every chunk in ``cache``: ``[N, K, Cz, T]``, computed once with the frozen encoders."""
    return torch.cat([decomposer.encode(mixture, batch_size) for mixture in cache.iter_mixture_latents()])


def cache_component_latents(state: dict, cache_uri: str, max_chunks: int | None = None) -> torch.Tensor:
    """z ``[N, K, Cz, T]`` of a latent cache's chunks (the first ``max_chunks``), computed with the frozen decomposer
    of ``state`` (:func:`decomposer_state`); refuses a cache encoded with another codec."""
    from ucr.codec.stats import LatentStats
    from ucr.config import ExperimentConfig

    config = ExperimentConfig.from_dict(state["config"])
    stats = LatentStats.from_dict(state["stats"]) if state.get("stats") else None
    decomposer = build_decomposer(config.model, state["codec"]["channels"], stats, channel_frequencies(config.codec))
    decomposer.load_state_dict(state["model"])
    cache = LatentCache(cache_uri)
    cache.require_codec(state["codec"]["fingerprint"], "the decomposer")
    if max_chunks is None:
        return component_latents(decomposer.eval(), cache)
    mixture = torch.stack([cache.item(i)["mixture"] for i in range(min(max_chunks, cache.num_chunks))])
    return decomposer.eval().encode(mixture)


def prior_validator(decomposer_uri: str, cache_uri: str, n_chunks: int, crop_frames: int, seed: int = 0):
    """``validate(prior) -> {"val_prior_loss": float}``: :func:`ucr.prior.validation_loss` on z of the first
    ``n_chunks`` chunks of a held-out cache (their first ``crop_frames`` frames), z computed at the first call."""
    from ucr.prior import validation_loss

    held_out: list[torch.Tensor] = []

    def validate(prior) -> dict:
        if not held_out:
            held_out.append(cache_component_latents(decomposer_state(ckpt.load(decomposer_uri)), cache_uri, n_chunks))
        z = held_out[0]  # [N, K, Cz, T]
        frames = min(crop_frames, z.shape[-1])
        usable = frames - frames % prior.time_multiple
        return {"val_prior_loss": validation_loss(prior, z[..., :usable], seed=seed)}

    return validate


def build_prior_trainer(config, decomposer_uri: str, cache_uri: str, run_uri: str,
                        device: torch.device | None = None, rank: int = 0, world_size: int = 1,
                        hooks: Hooks | None = None, progress: bool = True, wrap=None) -> Trainer:
    """A :class:`Trainer` for the masked prior over the frozen decomposer's component latents.

    The decomposer's architecture comes from its checkpoint; ``config`` gives the prior's settings (its ``prior``
    section and ``train.seed``). z of the training cache is computed once and kept in ``run_uri/z_cache.pt``.
    """
    import dataclasses

    from ucr import storage
    from ucr.config import ExperimentConfig
    from ucr.prior import build_prior

    state = decomposer_state(ckpt.load(decomposer_uri))
    base = ExperimentConfig.from_dict(state["config"])
    # the train section's schedule beyond the warmup (refine phase, annealing) is the decomposer's: the prior trains
    # at a constant rate after the warmup, as in the paper
    run_config = dataclasses.replace(base, prior=config.prior,
                                     train=dataclasses.replace(config.train, steps=config.prior.steps,
                                                               batch_size=config.prior.batch_size,
                                                               lr=config.prior.lr, refine_at=0, decay_steps=0))
    device = device or resolve_device(run_config.train.device)
    z_uri = storage.join(run_uri, "z_cache.pt")
    if storage.exists(z_uri):
        import io

        z = torch.load(io.BytesIO(storage.read_bytes(z_uri)), weights_only=True)
    else:
        z = cache_component_latents(state, resolve_cache(cache_uri, "train"))  # [N, K, Cz, T]
        if rank == 0:
            import io

            buffer = io.BytesIO()
            torch.save(z, buffer)
            storage.write_bytes(z_uri, buffer.getvalue())
    crop = min(run_config.data.crop_frames, z.shape[-1])
    torch.manual_seed(run_config.train.seed)
    prior = build_prior(run_config.prior, run_config.model)
    prior.set_statistics(z)
    prior = prior.to(device)
    if wrap is not None:
        prior = wrap(prior)
    per_rank = max(1, run_config.prior.batch_size // world_size)
    data_seed = run_config.train.seed * 1000 + rank

    def batch_fn(step: int) -> torch.Tensor:
        import numpy as np

        rng = np.random.default_rng([data_seed, step])
        index = rng.integers(0, len(z), size=per_rank)
        offset = rng.integers(0, z.shape[-1] - crop + 1, size=per_rank)
        return torch.stack([z[i, ..., o:o + crop] for i, o in zip(index, offset)])  # [B, K, Cz, crop]

    extra = {"kind": "prior", "config": run_config.to_dict(), "decomposer": state, "decomposer_uri": decomposer_uri,
             "codec": state["codec"], "sources": state.get("sources")}
    return Trainer(prior, batch_fn, run_config.train, run_uri, extra, device=device, rank=rank,
                   world_size=world_size, hooks=hooks, progress=progress)
