"""Ray Tune sweeps (entry point: `python -m tune.sweep`)."""
