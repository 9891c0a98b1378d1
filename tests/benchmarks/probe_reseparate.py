"""Research probe: does separating each separated source again move the leaked part where it belongs? (validation)

Stage 1 is the model's own separation of each mixture (its stored settings, as ``ucr evaluate`` runs it): ``s_k``,
``sum_k s_k = x``. Stage 2 separates every ``s_k`` again, as if it were a mixture, into ``s_kj`` (``sum_j s_kj =
s_k``, the modes that end in masks on the input's STFT or in the residual keep this exact). What source k lost to
the others sits in ``s_jk`` (j != k), what it took from them in ``s_kj``, so the re-separated sources are
``r_k = s_k + lam * (sum_{j != k} s_jk - sum_{j != k} s_kj)`` for ``lam`` in ``--lams``; every ``r`` still sums to
the mixture. The model's component order is the same in both stages (one model), so no labels are needed.
Scores: windowed SI-SDRi, fixed matching, original stems.

  OMP_NUM_THREADS=2 .venv/bin/python -m tests.benchmarks.probe_reseparate --data runs/demo_lat/validation \\
      runs/w2k3_s0/decomposer/final.pt [--second-mode one_pass] [--lams 0.5,1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tests.benchmarks.probe_seed_average import fixed_windowed_si_sdri, load_split, separate_as_stored
from ucr.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints")
    parser.add_argument("--data", required=True, help="one split's latent cache, encoded with --with-stems")
    parser.add_argument("--second-mode", default=None, help="separation mode of stage 2 (default: the model's)")
    parser.add_argument("--lams", default="0.5,1", help="comma-separated weights of the move (default 0.5,1)")
    args = parser.parse_args()
    lams = [float(v) for v in args.lams.split(",")]

    _cache, stems, mixtures, latents = load_split(args.data)  # [N, S, L], [N, L], [N, C, T]
    length = stems.shape[-1]

    def score(waves: np.ndarray, sample_rate: int) -> str:
        means, used = fixed_windowed_si_sdri(waves, stems, mixtures, sample_rate)
        return " / ".join(f"{m:.2f}" for m in means) + f" {used}"

    for uri in args.models:
        pipeline = Pipeline.from_pretrained(uri, device="cpu")

        def separate(latents: torch.Tensor, waves: np.ndarray, **changes) -> np.ndarray:  # -> [N, K, L]
            return np.stack(separate_as_stored(pipeline, latents, waves, length, **changes))

        first = separate(latents, mixtures)  # [N, K, L]
        K = first.shape[1]
        second_changes = {"mode": args.second_mode} if args.second_mode else {}
        second = np.stack([separate(pipeline.codec.encode(torch.as_tensor(first[:, k:k + 1])), first[:, k],
                                    **second_changes) for k in range(K)], axis=1)  # [N, K (input), K (output), L]
        kept = np.einsum("nkkl->nkl", second)  # s_kk
        print(f"{uri}: stage 1 {score(first, pipeline.sample_rate)}", flush=True)
        print(f"  stage 2 keeps of each input (diagonal energy share): "
              f"{[round(float((kept[:, k] ** 2).sum() / (first[:, k] ** 2).sum()), 3) for k in range(K)]}")
        moved_in = second.sum(axis=1) - kept  # sum_{j != k} s_jk
        moved_out = second.sum(axis=2) - kept  # sum_{j != k} s_kj
        for lam in lams:
            refined = first + lam * (moved_in - moved_out)
            print(f"  re-separated, lam {lam:g}: {score(refined, pipeline.sample_rate)}", flush=True)


if __name__ == "__main__":
    main()
