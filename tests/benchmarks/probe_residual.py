"""Research probe: how the kept one-pass component is turned into the two separated sources (blind; validation).

On one decomposer's weights: one-pass separation (alpha*, draws), the blind rule keeps the component most coherent
with the mixture, then the other source is the mixture residual with the kept component taken
  - at unit gain (the earlier rule),
  - after a least-squares gain per chunk (the rule ``replace_with_residual`` applies now),
  - after least-squares gains per block of channels x frames (finer: they start to fit the other source too),
and, in the waveform domain, soft STFT masks built from the kept component (Wiener p = 1 / 2, ratio mask).
``--refine N``: instead of one pass, a short deterministic sampler from alpha* to 1 in N steps, every component
starting from the same noisy mixture (``--project``: the parts' mean held to the mixture at every step).
Scores: whole-chunk SI-SDRi (the MDCT is orthogonal, so latent-domain SI-SDR is the waveform's), best fixed matching.

  OMP_NUM_THREADS=1 .venv/bin/python -m tests.benchmarks.probe_residual --model runs/base/final.pt \\
      --data runs/db120_lat/validation [--alpha 0.3] [--draws 4] [--blocks] [--masks]
"""

from __future__ import annotations

import argparse

import torch

from ucr.data.latents import LatentCache
from ucr.decomposer import coherence_with_mixture
from ucr.metrics import si_sdr_improvement
from ucr.pipeline import Pipeline


def block_gains(estimate: torch.Tensor, mixture: torch.Tensor, block_c: int, block_t: int) -> torch.Tensor:
    """Least-squares gains of ``estimate`` against ``mixture`` (both ``[N, C, T]``) per block, held over it."""
    N, C, T = estimate.shape
    block_c, block_t = min(block_c, C), min(block_t, T)
    pool = torch.nn.functional.avg_pool2d
    num = pool((estimate * mixture)[:, None], (block_c, block_t), ceil_mode=True)[:, 0]
    den = pool((estimate * estimate)[:, None], (block_c, block_t), ceil_mode=True)[:, 0] + 1e-8
    gains = (num / den).clamp(min=0.0)
    return gains.repeat_interleave(block_c, 1)[:, :C].repeat_interleave(block_t, 2)[..., :T]


@torch.no_grad()
def refine(model, mixture: torch.Tensor, alpha: float, steps: int, draws: int, project: bool,
           generator: torch.Generator) -> torch.Tensor:
    """Normalised parts ``[N, K, C, T]``: from ``blend(x, eps, alpha)`` (shared by every k) to alpha = 1 in ``steps``
    deterministic IADB steps per component, averaged over ``draws`` noise draws."""
    from ucr.decomposer import project_to_mixture
    from ucr.diffusion import iadb

    x = model.normalize(mixture)
    z = model.components(x)
    B, K = z.shape[:2]
    grid = torch.linspace(alpha, 1.0, steps + 1).tolist()
    total = 0
    for _ in range(draws):
        noise = torch.randn(x.shape, generator=generator)
        start = torch.full((B,), alpha)
        current = iadb.blend(x, noise, start)[:, None].expand(B, K, *x.shape[1:]).clone()  # [B, K, C, T]
        for a, a_next in zip(grid[:-1], grid[1:]):
            x0 = model.denoise_each(current, torch.full((B,), a), z)
            if project:
                x0 = project_to_mixture(x0, x)
            if a_next >= 1.0:
                current = x0
                break
            eps = (current - a * x0) / (1 - a)
            current = a_next * x0 + (1 - a_next) * eps
        total = total + current
    return model.denormalize(total / draws)


@torch.no_grad()
def reencoding_consistency(model, parts: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """``[K]``: for each component k, the correlation between z_k of the mixture and z_k of the component's own
    estimate taken as a mixture (``parts[:, k] / K``, a mixture holding only that source). A clean source estimate
    re-encodes to its own code; an incoherent one does not."""
    K = parts.shape[1]
    z = model.encode(mixture)  # [N, K, Cz, T]
    out = []
    for k in range(K):
        again = model.encode(parts[:, k] / K)[:, k].flatten()
        mine = z[:, k].flatten()
        again, mine = again - again.mean(), mine - mine.mean()
        out.append(float((again * mine).sum() / (again.norm() * mine.norm() + 1e-12)))
    return torch.tensor(out)


def load_probe(model_uri: str, data: str, chunks: int):
    """``(model, codec, items, mixture [N, C, T], sources)``: a decomposer in eval mode and the first ``chunks``
    chunks of a split's cache with stems."""
    pipeline = Pipeline.from_checkpoint(model_uri)
    cache = LatentCache(data)
    items = [cache.item(i) for i in range(min(chunks, cache.num_chunks))]
    mixture = torch.stack([item["mixture"] for item in items])
    return pipeline.model.eval(), pipeline.codec, items, mixture, list(cache.sources)


def best_fixed(estimates, references, mixture):
    """Mean SI-SDRi per source ``[S]`` under the better of the two fixed component -> source matchings."""
    best = None
    for order in ([0, 1], [1, 0]):
        scores = si_sdr_improvement(estimates[:, order], references, mixture).mean(0)
        best = scores if best is None or scores.mean() > best.mean() else best
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="a split's latent cache with stems (K = S = 2)")
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--blocks", action="store_true", help="also the per-block gains")
    parser.add_argument("--masks", action="store_true", help="also the waveform-domain STFT masks")
    parser.add_argument("--rule", choices=["coherence", "reencode"], default="coherence",
                        help="blind choice of the kept component: coherence with the mixture (the product's rule) or "
                             "re-encoding consistency")
    parser.add_argument("--refine", type=int, default=0, help="sampler steps from alpha* to 1 instead of one pass")
    parser.add_argument("--project", action="store_true", help="with --refine: hold the parts' mean to the mixture")
    args = parser.parse_args()

    model, codec, items, mixture, sources = load_probe(args.model, args.data, args.chunks)  # mixture [N, C, T]
    stems = torch.stack([item["stems"] for item in items])  # [N, S, C, T]
    generator = torch.Generator().manual_seed(0)
    if args.refine:
        parts = torch.cat([refine(model, mixture[i:i + 16], args.alpha, args.refine, args.draws, args.project,
                                  generator) for i in range(0, len(mixture), 16)])
    else:
        parts = model.separate(mixture, mode="one_pass", alpha=args.alpha, draws=args.draws,
                               generator=generator)  # [N, K, C, T]
    K = parts.shape[1]
    coherence = coherence_with_mixture(parts, mixture).mean(0)  # [K]
    choice = int(coherence.argmax())
    if args.rule == "reencode":
        consistency = reencoding_consistency(model, parts, mixture)
        print(f"[probe] coherence {[round(float(c), 3) for c in coherence]}, re-encoding consistency "
              f"{[round(float(c), 3) for c in consistency]}")
        choice = int(consistency.argmax())
    kept = parts[:, choice]  # [N, C, T]
    N = len(mixture)

    def report(first, second, label):
        estimates = torch.stack([first, second], 1).reshape(N, 2, -1).numpy()
        scores = best_fixed(estimates, stems.reshape(N, len(sources), -1).numpy(), mixture.reshape(N, 1, -1).numpy())
        print(f"{label:52s} " + "  ".join(f"{name} {value:6.2f}" for name, value in zip(sources, scores)),
              flush=True)

    print(f"[probe] {args.model}: alpha* {args.alpha}, {args.draws} draws, {N} chunks"
          + (f", refined in {args.refine} steps{' (projected)' if args.project else ''}" if args.refine else ""))
    report(parts[:, 0], parts[:, 1], "the two components as they are")
    print(f"[probe] kept component {choice} ({args.rule} rule)")
    report(kept, K * mixture - kept, "residual, unit gain (the earlier rule)")
    gain = block_gains(kept, mixture, 10**6, 10**6)
    report(gain * kept, mixture - gain * kept, "residual, least-squares gain per chunk (the rule)")
    if args.blocks:
        for block_c, block_t in [(1, 10**6), (4, 10**6), (1, 32), (4, 8), (1, 1)]:
            gain_b = block_gains(kept, mixture, block_c, block_t)
            report(gain_b * kept, mixture - gain_b * kept, f"residual, gains per {block_c} ch x {block_t} frames")
    if args.masks:
        drums = codec.decode(gain * kept)[:, 0]
        mix_wave = codec.decode(mixture)[:, 0]
        references = torch.stack([codec.decode(stems[:, s])[:, 0] for s in range(stems.shape[1])], 1).numpy()

        def report_wave(first, second, label):
            scores = best_fixed(torch.stack([first, second], 1).numpy(), references, mix_wave[:, None].numpy())
            print(f"{label:52s} " + "  ".join(f"{name} {value:6.2f}" for name, value in zip(sources, scores)),
                  flush=True)

        for n_fft in (512, 1024, 2048):
            window = torch.hann_window(n_fft)
            stft = lambda x: torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True)  # noqa: E731
            istft = lambda X: torch.istft(X, n_fft, n_fft // 4, window=window,  # noqa: E731
                                          length=mix_wave.shape[-1])
            kept_spec, mix_spec = stft(drums), stft(mix_wave)
            other_spec = mix_spec - kept_spec
            for power in (1.0, 2.0):
                mask = kept_spec.abs() ** power / (kept_spec.abs() ** power + other_spec.abs() ** power + 1e-10)
                report_wave(istft(mask * mix_spec), istft((1 - mask) * mix_spec), f"STFT Wiener p={power:g}, n_fft {n_fft}")
            ratio = (kept_spec.abs() / (mix_spec.abs() + 1e-10)).clamp(max=1)
            report_wave(istft(ratio * mix_spec), istft((1 - ratio) * mix_spec), f"STFT ratio mask, n_fft {n_fft}")


if __name__ == "__main__":
    main()
