"""Builders that turn an ExperimentConfig + a latent cache into a ready :class:`Trainer` (decomposer, supervised
reference). The CLI, the Ray Train workers and the Tune trials all call these: one place for the set-up."""

from __future__ import annotations

import torch

from ucr.data.latents import LatentCache, resolve_cache
from ucr.decomposer import build_decomposer
from ucr.train.loop import Hooks, Trainer, resolve_device


def open_training_cache(cache_uri: str, config) -> LatentCache:
    cache = LatentCache(resolve_cache(cache_uri, "train"))
    if cache.frames_per_chunk < config.data.crop_frames:
        raise ValueError(f"data.crop_frames = {config.data.crop_frames} but the cache at {cache_uri} holds chunks of "
                         f"{cache.frames_per_chunk} frames; lower data.crop_frames or re-encode with longer chunks")
    return cache


def build_decomposer_trainer(config, cache_uri: str, run_uri: str, supervised: bool = False,
                             device: torch.device | None = None, rank: int = 0, world_size: int = 1,
                             hooks: Hooks | None = None, progress: bool = True, wrap=None) -> Trainer:
    """A :class:`Trainer` for the decomposer (or, with ``supervised``, its supervised reference).

    ``wrap(model) -> model`` lets the caller wrap the module (DistributedDataParallel) after it is on its device.
    Each of ``world_size`` ranks draws its own ``batch_size // world_size`` examples per step.
    """
    cache = open_training_cache(cache_uri, config)
    stats = cache.stats if config.codec.normalize_latents else None
    if supervised and config.model.n_components != len(cache.sources):
        raise ValueError(f"the supervised reference needs model.n_components = {len(cache.sources)} "
                         f"(the number of sources {list(cache.sources)})")
    device = device or resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)  # the initial weights
    model = build_decomposer(config.model, cache.channels, stats).to(device)
    if wrap is not None:
        model = wrap(model)
    per_rank = max(1, config.train.batch_size // world_size)
    keys = ("mixture", "stems") if supervised else "mixture"
    data_seed = config.train.seed * 1000 + rank
    window = None if cache.num_chunks * cache.channels * cache.frames_per_chunk * 4 < 2**31 else 8

    def batch_fn(step: int):
        return cache.sample_batch(step, per_rank, config.data.crop_frames, seed=data_seed, key=keys,
                                  shard_window=window)

    extra = {"kind": "supervised" if supervised else "decomposer", "config": config.to_dict(),
             "stats": stats.to_dict() if stats else None, "codec": cache.manifest["codec"],
             "sources": list(cache.sources), "cache": cache_uri}
    return Trainer(model, batch_fn, config.train, run_uri, extra, device=device, rank=rank, world_size=world_size,
                   hooks=hooks, progress=progress)
