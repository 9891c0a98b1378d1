"""Datasets: readers (Slakh2100, MUSDB18-HQ), the synthetic renderer, the latent cache."""
