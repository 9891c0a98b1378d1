"""Generation metrics for a pipeline with a prior (evaluation.md, "Generation quality").

* Fréchet distance and density/coverage between real and generated features, next to a held-out real half (the
  floor), a noise baseline (independent Gaussians with the real per-dimension mean and std) and, for components,
  a shuffled baseline (each component taken from a different real excerpt: right marginals, no dependencies).
  Features (``embedder``): ``latent`` = frames of the model-normalised codec latent of the mixture ``[C]``, and
  patches of the component latents z (8 frames x K components).
* Consistency: generated components, composed (mean) and separated again, come back close to themselves (SI-SDR).
* Variation: on real excerpts, kept components stay put across seeds while regenerated ones vary (mean pairwise
  SI-SDR between seeds of each component's audio).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import torch

from ucr import metrics, storage
from ucr.data.latents import LatentCache

PATCH = 8


def _frames(latents: torch.Tensor, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``[N, C, T]`` -> up to ``limit`` random frames ``[M, C]``."""
    frames = latents.transpose(1, 2).reshape(-1, latents.shape[1]).numpy()
    if len(frames) > limit:
        frames = frames[rng.choice(len(frames), limit, replace=False)]
    return frames.astype(np.float64)


def _patches(z: torch.Tensor, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``z [N, K, 1, T]`` -> up to ``limit`` patches ``[M, K * PATCH]``."""
    N, K, Cz, T = z.shape
    usable = T // PATCH * PATCH
    patches = z[..., :usable].reshape(N, K * Cz, usable // PATCH, PATCH).permute(0, 2, 1, 3).reshape(-1, K * Cz * PATCH)
    patches = patches.numpy()
    if len(patches) > limit:
        patches = patches[rng.choice(len(patches), limit, replace=False)]
    return patches.astype(np.float64)


def _noise_like(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(features.mean(0), features.std(0) + 1e-12, size=features.shape)


def _compare(real: np.ndarray, candidates: dict[str, np.ndarray], k: int = 5) -> dict:
    rows = {}
    for name, features in candidates.items():
        density, coverage = metrics.density_coverage(real, features, k=k)
        rows[name] = {"frechet": metrics.frechet_distance(real, features), "density": density,
                      "coverage": coverage, "n": int(len(features))}
    return rows


def evaluate_generation(pipeline, cache_uri: str, out: str | None = None, n: int = 8, seconds: float = 4.0,
                        steps: int = 20, seed: int = 0, max_features: int = 2000,
                        variation_chunks: int = 4, variation_seeds: int = 3) -> dict:
    """Generation report of ``pipeline`` (needs a prior) against the real chunks of ``cache_uri``."""
    if pipeline.prior is None:
        raise ValueError("generation metrics need a prior: evaluate a prior checkpoint")
    model, codec = pipeline.model, pipeline.codec
    rng = np.random.default_rng(seed)
    cache = LatentCache(cache_uri)
    real_latents = torch.cat(list(cache.iter_mixture_latents()))  # [N, C, T]
    with torch.no_grad():
        real_norm = model.normalize(real_latents)
        real_z = model.encode(real_latents)
    generated = pipeline.generate(n=n, seconds=seconds, seed=seed, steps=steps)
    generated_latents = codec.encode(torch.from_numpy(generated["mixture"])[:, None])  # [n, C, T]
    with torch.no_grad():
        generated_norm = model.normalize(generated_latents)

    # -- Fréchet distance, density and coverage ---------------------------------------------------------------------
    order = rng.permutation(len(real_latents))
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2:]
    real_frames = _frames(real_norm[half_a], max_features, rng)
    mixture_rows = _compare(real_frames, {
        "real (held-out half)": _frames(real_norm[half_b], max_features, rng),
        "generated": _frames(generated_norm, max_features, rng),
        "noise baseline": _noise_like(real_frames, rng)})
    real_patches = _patches(real_z[half_a], max_features, rng)
    shuffled = torch.stack([real_z[rng.permutation(len(real_z)), k] for k in range(real_z.shape[1])], dim=1)
    component_rows = _compare(real_patches, {
        "real (held-out half)": _patches(real_z[half_b], max_features, rng),
        "generated": _patches(generated["z"], max_features, rng),
        "shuffled components": _patches(shuffled, max_features, rng),
        "noise baseline": _noise_like(real_patches, rng)})

    # -- consistency: compose generated parts, separate again -------------------------------------------------------
    length = generated["components"].shape[-1]
    resep = []
    for mixture in generated["mixture"]:
        parts = pipeline.separate(mixture, pipeline.sample_rate, steps=steps, seed=seed).components  # [K, L]
        resep.append(parts[:, :length])
    consistency = []
    for original, again in zip(generated["components"], resep):
        scores = np.array([[metrics.si_sdr(again[j], original[k]) for k in range(len(original))]
                           for j in range(len(again))])
        assignment = metrics.match_per_example(scores)
        consistency.append([scores[j, s] for j, s in enumerate(assignment.component_to_source) if s >= 0])
    consistency = np.asarray(consistency)  # [n, K]

    # -- variation: keep one component, regenerate the rest, over several seeds --------------------------------------
    K = model.n_components
    variation = {"kept": [], "regenerated": []}
    frames = min(real_z.shape[-1], cache.frames_per_chunk)
    for chunk in range(min(variation_chunks, len(real_z))):
        for keep_index in range(K):
            keep = torch.zeros(variation_seeds, K, dtype=torch.bool)
            keep[:, keep_index] = True
            known = real_z[chunk:chunk + 1, ..., :frames].expand(variation_seeds, -1, -1, -1)
            generator = torch.Generator().manual_seed(seed + chunk)
            z = pipeline.prior.sample(known, keep=keep, steps=steps, generator=generator)
            waves, _ = pipeline._decode_z(z, steps, generator)  # [seeds, K, L]
            for k in range(K):
                pair_scores = [metrics.si_sdr(waves[a, k], waves[b, k])
                               for a, b in itertools.combinations(range(variation_seeds), 2)]
                variation["kept" if k == keep_index else "regenerated"].append(float(np.mean(pair_scores)))
    report = {
        "n_generated": n, "seconds": seconds, "steps": steps, "embedder": "latent",
        "mixture_latent_frames": mixture_rows, "component_patches": component_rows,
        "consistency_si_sdr": metrics.summarize(consistency.reshape(-1)),
        "consistency_per_component": [metrics.summarize(consistency[:, k]) for k in range(consistency.shape[1])],
        "variation_between_seeds_si_sdr": {key: metrics.summarize(np.asarray(v)) for key, v in variation.items()},
    }
    if out:
        storage.write_text(storage.join(out, "generation_report.json"), json.dumps(report, indent=1, default=float))
        storage.write_text(storage.join(out, "generation_report.md"), generation_markdown(report))
    return report


def generation_markdown(report: dict) -> str:
    lines = [f"# Generation report\n",
             f"{report['n_generated']} excerpts of {report['seconds']:g} s, {report['steps']} sampler steps. "
             "Fréchet distance (lower is better), density and coverage (Naeem et al. 2020, k = 5; ~1 is ideal) "
             "against one half of the real test chunks.\n"]
    for title, key in (("Mixture latent frames (model-normalised codec latent)", "mixture_latent_frames"),
                       ("Component latent patches (8 frames x K)", "component_patches")):
        lines += [f"## {title}\n", "| features | Fréchet | density | coverage | n |", "|---|---|---|---|---|"]
        for name, row in report[key].items():
            lines.append(f"| {name} | {row['frechet']:.3f} | {row['density']:.3f} | {row['coverage']:.3f} | "
                         f"{row['n']} |")
        lines.append("")
    c = report["consistency_si_sdr"]
    v = report["variation_between_seeds_si_sdr"]
    lines += ["## Consistency and variation\n",
              f"- Consistency (generated components, composed and separated again): SI-SDR {c['mean']:.2f} dB "
              f"(median {c['median']:.2f}, n = {c['n']}).",
              f"- Variation, mean pairwise SI-SDR of a component's audio between seeds: kept "
              f"{v['kept']['mean']:.2f} dB, regenerated {v['regenerated']['mean']:.2f} dB "
              "(kept components should stay close, regenerated ones should vary).", ""]
    return "\n".join(lines)
