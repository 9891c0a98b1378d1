"""Research probe: does averaging the separations of several trainings (seeds) beat the best of them? (validation)

Each model separates every chunk of the split with its own stored settings (mode, alpha*, shifts, ...), exactly as
``ucr evaluate`` does; the component waves ``[K, L]`` of all models are then averaged per chunk and scored the same
way. Component k must mean the same source in every model (true when an asymmetry such as
``model.slowest_component_stride`` fixes the order; the printed fixed assignments show it). Scores: windowed
SI-SDRi, fixed matching, original stems, one line per model and one for the average.

  OMP_NUM_THREADS=2 .venv/bin/python -m tests.benchmarks.probe_seed_average --data runs/demo_lat/validation \\
      runs/dctl_s0/final.pt runs/dctl_s1/final.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ucr import evaluate
from ucr.data.latents import LatentCache
from ucr.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints, one per training")
    parser.add_argument("--data", required=True, help="one split's latent cache, encoded with --with-stems")
    args = parser.parse_args()

    cache = LatentCache(args.data)
    items = [cache.item(i) for i in range(cache.num_chunks)]
    stems = np.stack([item["stem_waves"].numpy() for item in items])  # [N, S, L]
    mixtures = np.stack([item["mixture_wave"].numpy() for item in items])  # [N, L]
    latents = torch.stack([item["mixture"] for item in items])  # [N, C, T]
    options = evaluate.EvalOptions(nmf=False)

    def score(name: str, waves: list[np.ndarray], sample_rate: int) -> None:
        rows, used, _ = evaluate._score(evaluate.MethodOutputs(name, waves, labelled=False), stems, mixtures,
                                        sample_rate, options)
        means = [f"{row['si_sdri']['mean']:.2f}" for row in rows
                 if row["matching"] == "fixed" and row["protocol"] == "windowed"]
        print(f"{name}: SI-SDRi {' / '.join(means)} ({' / '.join(cache.sources)}), assignment {used}")

    per_model = []
    for uri in args.models:
        pipeline = Pipeline.from_pretrained(uri, device="cpu")
        waves, _ = evaluate._separate_chunks(pipeline.model, pipeline.codec, latents, options.steps, options.seed,
                                             options.batch_size, stems.shape[-1],
                                             **evaluate._settings(pipeline, options), mixtures=mixtures,
                                             sample_rate=pipeline.sample_rate)
        per_model.append(waves)
        score(uri, waves, pipeline.sample_rate)
    average = [np.mean([waves[i] for waves in per_model], axis=0) for i in range(len(items))]
    score("average of the models", average, pipeline.sample_rate)


if __name__ == "__main__":
    main()
