"""Self-describing checkpoints: config, model, EMA, optimiser, scheduler, RNG states, step, codec and statistics.

A checkpoint is one file (``torch.save`` of a dict), written atomically to a local path or ``s3://`` URI. A run
folder holds ``checkpoints/step-00001000.pt`` files (the newest ``keep`` of them) and ``final.pt``.
"""

from __future__ import annotations

import io
import random
import re

import numpy as np
import torch

from ucr import storage

CHECKPOINT_VERSION = 1
_STEP_FILE = re.compile(r"step-(\d+)\.pt$")


def save(uri: str, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **payload}, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def load(uri: str) -> dict:
    """Load a checkpoint file, or the newest checkpoint of a run folder."""
    resolved = resolve(uri)
    try:
        data = storage.read_bytes(resolved)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {resolved} not found") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        raise ValueError(f"{resolved} is not a UCR checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or "kind" not in payload:
        raise ValueError(f"{resolved} is not a UCR checkpoint (no 'kind' field)")
    return payload


def step_checkpoints(run_uri: str) -> list[tuple[int, str]]:
    """``[(step, uri)]`` of the step checkpoints in a run folder, oldest first."""
    folder = storage.join(run_uri, "checkpoints")
    found = []
    for name in storage.listdir(folder):
        match = _STEP_FILE.match(name)
        if match:
            found.append((int(match.group(1)), storage.join(folder, name)))
    return sorted(found)


def latest(run_uri: str) -> str | None:
    """The newest resumable checkpoint of a run folder (a step checkpoint), or None."""
    found = step_checkpoints(run_uri)
    return found[-1][1] if found else None


def resolve(uri: str) -> str:
    """A file URI stays; a run folder resolves to ``final.pt`` or else its newest step checkpoint."""
    if uri.endswith(".pt"):
        return uri
    final = storage.join(uri, "final.pt")
    if storage.exists(final):
        return final
    newest = latest(uri)
    if newest is None:
        raise ValueError(f"no checkpoint in {uri} (expected final.pt or checkpoints/step-*.pt)")
    return newest


def prune(run_uri: str, keep: int) -> None:
    for _step, uri in step_checkpoints(run_uri)[:-keep]:
        storage.remove(uri)


def rng_state() -> dict:
    return {"torch": torch.random.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
