"""Research probe: separation by a decomposer trained in the STFT-magnitude latent (``codec.name: stft_mag``).

Component magnitudes become ratio masks on the mixture's complex STFT (:func:`ucr.codec.stft.mask_decode`), one-pass
at several alpha*, with and without the blind residual rule; the oracle magnitude ratio mask (the stems' own
magnitudes) is the ceiling. Scores: whole-chunk waveform SI-SDRi against the original stems, best fixed matching.

  OMP_NUM_THREADS=1 .venv/bin/python -m tests.benchmarks.probe_magnitude --model runs/mag/final.pt \\
      --data runs/db120_mag/validation
"""

from __future__ import annotations

import argparse

import torch

from ucr.codec.stft import mask_decode
from tests.benchmarks.probe_residual import best_fixed, load_probe
from ucr.decomposer import coherence_with_mixture, replace_with_residual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="a split's stft_mag latent cache with stems (K = S = 2)")
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--alphas", default="0.2,0.3,0.5,0.7")
    args = parser.parse_args()

    model, codec, items, mixture, sources = load_probe(args.model, args.data, args.chunks)  # mixture [N, C, T]
    length = mixture.shape[-1] * codec.hop_length
    pad = lambda x: torch.nn.functional.pad(x, (0, length - x.shape[-1]))  # noqa: E731
    mix_wave = pad(torch.stack([item["mixture_wave"] for item in items]))  # [N, L]
    references = pad(torch.stack([item["stem_waves"] for item in items])).numpy()  # [N, S, L]

    def report(waves, label):
        scores = best_fixed(waves.numpy(), references, mix_wave[:, None].numpy())
        print(f"{label:44s} " + "  ".join(f"{name} {value:6.2f}" for name, value in zip(sources, scores)), flush=True)

    report(mask_decode(codec, torch.stack([item["stems"] for item in items]), mix_wave), "oracle magnitude ratio mask")
    for alpha in (float(a) for a in args.alphas.split(",")):
        parts = model.separate(mixture, mode="one_pass", alpha=alpha, draws=4, generator=torch.Generator().manual_seed(0))
        report(mask_decode(codec, parts, mix_wave), f"one pass, alpha* {alpha}: masks")
        trust = coherence_with_mixture(parts, mixture).mean(0)
        residual = replace_with_residual(parts, mixture, trust).clamp(min=0)
        report(mask_decode(codec, residual, mix_wave), f"one pass, alpha* {alpha}: kept + residual, masks")


if __name__ == "__main__":
    main()
