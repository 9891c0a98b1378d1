"""Model references: what ``--model``, ``$UCR_MODEL`` and :meth:`ucr.pipeline.Pipeline.from_pretrained` accept, and
where a model is found when none is named.

A reference is one of

- a checkpoint file (``runs/cpu60/final.pt``), local or ``s3://``;
- a run folder (``runs/cpu60``: its ``final.pt``, else its newest ``checkpoints/step-*.pt``);
- an experiment folder of the jobs layout (``demo_out``, ``runs/demo``): its prior, else its decomposer — the
  model the register job would register;
- a registry reference, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

With no reference the search order is ``$UCR_MODEL``, then the registry's ``models:/ucr@champion`` when
``MLFLOW_TRACKING_URI`` is set (else when the jobs' default local store, ``~/.ucr/mlflow.db``, exists), then the model
of the last ``make demo`` (``./demo_out``).

The registry needs MLflow, which this package never imports: the lookup and download run in a child process,
``python -m serve.source`` (the Serve application's resolver, the one home of registry look-ups), the way ``ucr run``
hands Ray jobs to ``python -m jobs.<stage>``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ucr import storage

DEFAULT_REGISTRY_MODEL = "models:/ucr@champion"
DEMO_FOLDER = "demo_out"  # where `make demo` / `ucr demo` write
EXPERIMENT_MODELS = ("prior", "decomposer")  # inside an experiment folder, in order of preference
# a registered version's artifacts: the register job writes them, serve/source.py and the pyfunc model read them
REGISTERED_CHECKPOINT_FILE = "checkpoint.pt"  # a data-only checkpoint
REGISTERED_CARD_FILE = "ucr.json"  # what the model is (kind, preset, codec, sources, step)
# tags the evaluate stage sets on a registered version (read back by the CLI and the Serve model card)
COMPONENT_SOURCES_TAG = "ucr.component_sources"  # JSON list, the source of each component
VALIDATION_SCORE_TAG = "val_si_sdri"  # mean validation SI-SDRi (dB), the promotion score
PROMOTION_TAG = "ucr.promotion"  # why the version was (not) given the alias
NO_MODEL = ("no model to use: pass --model (a checkpoint, a run folder, or models:/ucr@champion), set UCR_MODEL, or "
            "run `make demo` to train one into demo_out/")

def default_tracking_dir() -> Path:
    """Where the jobs and the tracked commands keep MLflow (``mlflow.db``, ``mlartifacts/``) when
    ``MLFLOW_TRACKING_URI`` is unset: ``~/.ucr``."""
    return Path.home() / ".ucr"


def default_tracking_uri() -> str:
    return f"sqlite:///{default_tracking_dir() / 'mlflow.db'}"


_REGISTRY_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_registry_reference(reference: str) -> tuple[str, str | None, str | None] | None:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3"); other URIs -> None."""
    if not reference.startswith("models:/"):
        return None
    match = _REGISTRY_REF.match(reference)
    if match is None:
        raise ValueError(f"model reference {reference!r} is not understood; use models:/<name>@<alias>, "
                         f"models:/<name>/<version>, or a checkpoint path or s3:// URI")
    return match["name"], match["alias"], match["version"]


def checkpoint_name(uri: str) -> str:
    """A readable name for a checkpoint URI: the file's stem, or its run folder for final.pt / step-*.pt."""
    parts = [part for part in uri.rstrip("/").split("/") if part]
    stem = parts[-1][:-3] if parts[-1].endswith(".pt") else parts[-1]
    if stem in ("final", "checkpoint") or stem.startswith("step-"):
        run = parts[-3] if len(parts) >= 3 and parts[-2] == "checkpoints" else parts[-2] if len(parts) >= 2 else stem
        return run
    return stem


def model_name(uri: str) -> str:
    """:func:`checkpoint_name`, with a run folder of an experiment named after the experiment too
    (``demo_out/prior/final.pt`` -> ``demo_out-prior``): the name of the folder outputs go to."""
    name = checkpoint_name(uri)
    parts = [part for part in uri.rstrip("/").split("/") if part]
    at = len(parts) - 1 - parts[::-1].index(name) if name in parts else -1
    if name in EXPERIMENT_MODELS + ("supervised",) and at >= 1:
        return f"{parts[at - 1]}-{name}"
    return name


def experiment_model(root: str) -> str | None:
    """The finished model of an experiment folder (``<root>/prior/final.pt``, else ``<root>/decomposer/final.pt``),
    or None when it holds neither."""
    for stage in EXPERIMENT_MODELS:
        final = storage.join(root, stage, "final.pt")
        if storage.exists(final):
            return final
    return None


@dataclass(frozen=True)
class ModelRef:
    """A model reference resolved to a checkpoint that :meth:`Pipeline.from_checkpoint` reads.

    ``name`` names the output folder (``separated/<name>/``); ``found_by`` says how it was chosen (shown to the user);
    ``component_sources`` is the registry's record of which source each component is (None: use the checkpoint's);
    ``workdir`` is a folder of downloaded files this process removes with :meth:`cleanup` once the model is loaded.
    """

    checkpoint: str
    name: str
    found_by: str
    component_sources: tuple | None = None
    workdir: str | None = None

    def cleanup(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def resolve(reference: str | None = None, environ: dict | None = None) -> ModelRef:
    """Resolve ``reference`` (see the module docstring), or find a model when it is None or empty."""
    environ = os.environ if environ is None else environ
    if reference:
        return _from_reference(reference, "--model")
    if environ.get("UCR_MODEL"):
        return _from_reference(environ["UCR_MODEL"], "$UCR_MODEL")
    tracking = environ.get("MLFLOW_TRACKING_URI") or (
        default_tracking_uri() if (default_tracking_dir() / "mlflow.db").is_file() else None)
    if tracking:
        found = fetch_registry(DEFAULT_REGISTRY_MODEL, if_exists=True,
                               environ={**environ, "MLFLOW_TRACKING_URI": tracking})
        if found is not None:
            return found
    demo = experiment_model(DEMO_FOLDER)
    if demo is not None:
        return ModelRef(demo, DEMO_FOLDER, f"the last `make demo` model, {demo}")
    raise ValueError(NO_MODEL)


def _from_reference(reference: str, found_by: str) -> ModelRef:
    reference = reference.strip()
    if parse_registry_reference(reference) is not None:
        return fetch_registry(reference, found_by=found_by)
    if not reference.endswith(".pt") and storage.isdir(reference) and not storage.exists(
            storage.join(reference, "final.pt")) and not storage.exists(storage.join(reference, "checkpoints")):
        model = experiment_model(reference)
        if model is None:
            raise ValueError(f"{reference} holds no model: expected a checkpoint file (.pt), a run folder (final.pt "
                             f"or checkpoints/step-*.pt) or an experiment folder with prior/final.pt or "
                             f"decomposer/final.pt")
        return ModelRef(model, model_name(reference), f"{found_by} {reference}")
    return ModelRef(reference, model_name(reference), f"{found_by} {reference}")


def fetch_registry(reference: str, if_exists: bool = False, found_by: str = "the registry",
                   environ: dict | None = None) -> ModelRef | None:
    """Download a registered version into a temporary folder (in ``python -m serve.source``, which has MLflow).

    ``if_exists``: return None, instead of failing, when the registry has no such model or alias or does not
    answer (the search for a default model goes on)."""
    workdir = tempfile.mkdtemp(prefix="ucr-model-")
    command = [sys.executable, "-m", "serve.source", reference, "--dst", workdir] + (["--if-exists"] if if_exists
                                                                                     else [])
    env = dict(os.environ if environ is None else environ)
    if if_exists:  # a probe: an unreachable server must not hold the user up for MLflow's minutes of retries
        env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    except OSError as err:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"{reference}: could not start the registry look-up ({err})") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        shutil.rmtree(workdir, ignore_errors=True)
        message = (done.stderr.strip().splitlines() or ["the registry look-up failed"])[-1].removeprefix("error: ")
        if if_exists:
            print(f"[ucr] {reference}: {message}; looking further", file=sys.stderr)
            return None
        raise ValueError(message)
    found = json.loads(lines[-1])
    if found is None:
        shutil.rmtree(workdir, ignore_errors=True)
        return None
    sources = found.get("card", {}).get("component_sources")
    return ModelRef(found["checkpoint"], f"{found['name']}-v{found['version']}",
                    f"{found_by} {reference} (version {found['version']})",
                    tuple(sources) if isinstance(sources, list) else None, workdir)
