"""Where models run: the one rule that turns a device name from a config or a command line (``auto``, ``cpu``,
``cuda``, ``cuda:1``) into a ``torch.device`` — used by training, inference and Serve alike."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; any other name as given, refused when it needs CUDA and there is
    none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use auto or cpu")
    return torch.device(name)
