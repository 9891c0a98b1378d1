"""Training: the framework-agnostic loop, checkpoints, EMA."""

from ucr.train.loop import Hooks, Trainer, TrainResult, resolve_device

__all__ = ["Hooks", "Trainer", "TrainResult", "resolve_device"]
