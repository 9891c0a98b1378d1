"""Ray job entry points: one module per stage, and `jobs.pipeline` that runs them in order."""
