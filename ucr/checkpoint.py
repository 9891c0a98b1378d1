"""Self-describing checkpoints: config, model, EMA, optimiser, scheduler, RNG states, step, codec and statistics.

A checkpoint is one file (``torch.save`` of a dict), written atomically to a local path or ``s3://`` URI. A run
folder holds ``checkpoints/step-00001000.pt`` files (the newest ``keep`` of them) and ``final.pt``.

Checkpoints hold data only: tensors, numbers, strings, lists, tuples and dicts (the numpy RNG state is stored as a
tensor and plain values). They are loaded with ``torch.load(weights_only=True)``, which never unpickles arbitrary
objects, so a planted file cannot run code on load.
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
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged, foreign or unsafe file
        raise ValueError(f"{resolved} is not a UCR checkpoint that loads as data: it is damaged, foreign, or holds "
                         f"objects other than tensors and plain values, so it is refused rather than unpickled "
                         f"(a checkpoint of the earlier pickled format that you trust can be rewritten with "
                         f"`ucr checkpoint convert OLD NEW`) ({type(err).__name__})") from None
    check_fields(payload, resolved)
    return payload


KINDS = ("decomposer", "supervised", "prior", "codec")
# the fields every checkpoint kind must carry, and their types
_REQUIRED = {"kind": str, "config": dict, "model": dict, "codec": dict}


def inference_weights(payload: dict, use_ema: bool = True) -> dict:
    """The state dict inference uses: the EMA weights when the checkpoint has them (and ``use_ema``), else the
    trained weights."""
    return payload["ema"] if use_ema and payload.get("ema") is not None else payload["model"]


def check_fields(payload, name: str) -> None:
    """Refuse, with one clear sentence, a payload that is not a complete UCR checkpoint (instead of a KeyError or
    an AttributeError deep in model building)."""
    if not isinstance(payload, dict) or "kind" not in payload:
        raise ValueError(f"{name} is not a UCR checkpoint (no 'kind' field)")
    if payload["kind"] not in KINDS:
        raise ValueError(f"{name} is a checkpoint of unknown kind {payload['kind']!r}; expected one of {list(KINDS)}")
    missing = [key for key, kind in _REQUIRED.items() if not isinstance(payload.get(key), kind)]
    if missing:
        raise ValueError(f"{name} is an incomplete UCR checkpoint: field(s) {missing} missing or of the wrong type "
                         f"(it was not written by `ucr train` / `ucr train-prior`, or it was cut short); "
                         f"retrain, or point at another checkpoint")


def convert_trusted(source: str, target: str) -> None:
    """Rewrite a checkpoint of the earlier pickled format (``source``, a file *you trust*: loading it unpickles and
    so can run code) as a data-only checkpoint at ``target``. Used by ``ucr checkpoint convert``."""
    payload = torch.load(io.BytesIO(storage.read_bytes(resolve(source))), map_location="cpu", weights_only=False)
    check_fields(payload, source)
    rng = payload.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):
        name, keys, position, has_gauss, cached = rng["numpy"]
        rng["numpy"] = {"name": name, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                        "pos": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)  # refuse to write what would not load as data
    storage.write_bytes(target, buffer.getvalue())


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
    """Every RNG's state as data only (tensors, ints, floats, strings, tuples): safe for ``weights_only`` loading."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return {"torch": torch.random.get_rng_state(), "numpy": numpy_state, "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
