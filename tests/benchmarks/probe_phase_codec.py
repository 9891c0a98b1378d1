"""Research probe: a decomposer trained in the ``stft_if`` latent, scored through ratio masks of its components'
magnitudes on the mixture's STFT (the mixture's phase), one pass at alpha* 0.3 and 0.5, best fixed matching.

  OMP_NUM_THREADS=1 python -m tests.benchmarks.probe_phase_codec runs/if_s0/final.pt runs/db120_if/validation
"""
import sys, torch, numpy as np
from ucr.pipeline import Pipeline
from ucr.data.latents import LatentCache
from ucr.decomposer import coherence_with_mixture
from ucr.metrics import si_sdr_improvement
p = Pipeline.from_checkpoint(sys.argv[1]); model = p.model.eval(); codec = p.codec
cache = LatentCache(sys.argv[2]); N = min(60, cache.num_chunks)
items = [cache.item(i) for i in range(N)]
mix = torch.stack([it["mixture"] for it in items]); mixw = torch.stack([it["mixture_wave"] for it in items])
refs = torch.stack([it["stem_waves"] for it in items]).numpy()
L = refs.shape[-1]
g = torch.Generator().manual_seed(0)
for alpha in (0.3, 0.5):
    parts = model.separate(mix, mode="one_pass", alpha=alpha, draws=4, generator=g)  # [N,K,C,T]
    F = codec.bins
    mag = parts[:, :, :F].clamp(min=0) ** (1 / codec.power)
    masks = mag / (mag.sum(1, keepdim=True) + 1e-8)
    T = parts.shape[-1]
    spec = codec.spectrum(torch.nn.functional.pad(mixw, (0, T * codec.hop_length - mixw.shape[-1])))
    waves = codec.inverse((masks * spec[:, None]).reshape(N * 2, F, T)).reshape(N, 2, -1)[..., :L].numpy()
    best = None
    for order in ([0, 1], [1, 0]):
        sc = si_sdr_improvement(waves[:, order], refs, mixw[:, None, :L].numpy()).mean(0)
        best = sc if best is None or sc.mean() > best.mean() else best
    print(f"alpha {alpha}: masks from component magnitudes, mixture phase: Drums {best[0]:.2f} Bass {best[1]:.2f}", flush=True)
