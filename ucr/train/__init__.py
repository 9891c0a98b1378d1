"""Training: the framework-agnostic loop, EMA, and the builders of decomposer / prior runs (checkpoint I/O: ucr.checkpoint)."""

from ucr.train.loop import Hooks, Trainer, TrainResult

__all__ = ["Hooks", "Trainer", "TrainResult"]
