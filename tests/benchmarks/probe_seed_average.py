"""Research probe: does averaging the separations of several trainings (seeds) beat the best of them? (validation)

Each model separates every chunk of the split with its own stored settings (mode, alpha*, shifts, ...), exactly as
``ucr evaluate`` does; the component waves ``[K, L]`` of all models are then averaged per chunk and scored the same
way. Component k must mean the same source in every model (true when an asymmetry such as
``model.slowest_component_stride`` fixes the order; the printed fixed assignments show it). Scores: windowed
SI-SDRi, fixed matching, original stems, one line per model and one for the average. ``--pairs`` also scores every
pair of models averaged, and the mean gain of a pair over the mean, and over the better, of its two models.

  OMP_NUM_THREADS=2 .venv/bin/python -m tests.benchmarks.probe_seed_average --data runs/demo_lat/validation \\
      runs/dctl_s0/final.pt runs/dctl_s1/final.pt [--pairs]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from ucr import evaluate
from ucr.data.latents import LatentCache
from ucr.pipeline import Pipeline


def load_split(path: str) -> tuple[LatentCache, np.ndarray, np.ndarray, torch.Tensor]:
    """One split's cache (encoded with ``--with-stems``) -> the cache, ``stems [N, S, L]``, ``mixtures [N, L]`` and
    the mixtures' latents ``[N, C, T]``."""
    cache = LatentCache(path)
    items = [cache.item(i) for i in range(cache.num_chunks)]
    stems = np.stack([item["stem_waves"].numpy() for item in items])
    mixtures = np.stack([item["mixture_wave"].numpy() for item in items])
    latents = torch.stack([item["mixture"] for item in items])
    return cache, stems, mixtures, latents


def fixed_windowed_si_sdri(waves, stems: np.ndarray, mixtures: np.ndarray, sample_rate: int) -> tuple[np.ndarray, dict]:
    """Component waves (``[K, L]`` per chunk) -> the mean windowed SI-SDRi per source ``[S]`` under the fixed
    matching against the original stems (what ``ucr evaluate`` reports first), and the assignment used."""
    rows, used, _ = evaluate._score(evaluate.MethodOutputs("probe", list(waves), labelled=False), stems, mixtures,
                                    sample_rate, evaluate.EvalOptions(nmf=False))
    return np.array([row["si_sdri"]["mean"] for row in rows
                     if row["matching"] == "fixed" and row["protocol"] == "windowed"]), used


def separate_as_stored(pipeline: Pipeline, latents: torch.Tensor, mixtures: np.ndarray, length: int,
                       **changes) -> list[np.ndarray]:
    """``pipeline``'s separation of ``mixtures [N, L]`` (latents ``[N, C, T]``) with its stored settings (mode,
    alpha*, shifts, ...; ``changes`` override some), as ``ucr evaluate`` runs it -> component waves ``[K, length]``
    per chunk."""
    options = evaluate.EvalOptions(nmf=False)
    waves, _ = evaluate._separate_chunks(pipeline.model, pipeline.codec, latents, options.steps, options.seed,
                                         options.batch_size, length,
                                         **{**evaluate._settings(pipeline, options), **changes},
                                         mixtures=mixtures, sample_rate=pipeline.sample_rate)
    return waves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints, one per training")
    parser.add_argument("--data", required=True, help="one split's latent cache, encoded with --with-stems")
    parser.add_argument("--pairs", action="store_true", help="also score every pair of models averaged")
    args = parser.parse_args()

    cache, stems, mixtures, latents = load_split(args.data)

    def score(name: str, waves: list[np.ndarray], sample_rate: int) -> np.ndarray:
        """Prints and returns the mean windowed SI-SDRi per source ``[S]``."""
        means, used = fixed_windowed_si_sdri(waves, stems, mixtures, sample_rate)
        print(f"{name}: SI-SDRi {' / '.join(f'{m:.2f}' for m in means)} ({' / '.join(cache.sources)}), "
              f"assignment {used}", flush=True)
        return means

    per_model, singles = [], []
    for uri in args.models:
        pipeline = Pipeline.from_pretrained(uri, device="cpu")
        waves = separate_as_stored(pipeline, latents, mixtures, stems.shape[-1])
        per_model.append(waves)
        singles.append(score(uri, waves, pipeline.sample_rate))
    average = [np.mean([waves[i] for waves in per_model], axis=0) for i in range(len(stems))]
    score("average of the models", average, pipeline.sample_rate)
    if args.pairs and len(per_model) > 2:
        over_mean, over_best = [], []
        for a, b in itertools.combinations(range(len(per_model)), 2):
            pair = [(x + y) / 2 for x, y in zip(per_model[a], per_model[b])]
            scores = score(f"average of {args.models[a]} and {args.models[b]}", pair, pipeline.sample_rate)
            over_mean.append(scores - (singles[a] + singles[b]) / 2)
            over_best.append(scores - np.maximum(singles[a], singles[b]))
        print(f"a pair's average against its two models' mean: {np.mean(over_mean, axis=0).round(2)}, "
              f"against the better of the two: {np.mean(over_best, axis=0).round(2)} (dB per source, mean over "
              f"{len(over_mean)} pairs)")


if __name__ == "__main__":
    main()
