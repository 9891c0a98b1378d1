"""Where the served model comes from: an MLflow registry reference or a checkpoint URI.

``models:/<name>@<alias>`` (the default, ``models:/ucr@champion``) or ``models:/<name>/<version>`` is looked up in the
MLflow model registry; the registered version's artifact folder holds ``checkpoint.pt`` (plus ``MLmodel`` and
``ucr.json``), the contract of the register job. Anything else is a checkpoint file or run folder, local or
``s3://``, that :meth:`ucr.pipeline.Pipeline.from_checkpoint` reads directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

DEFAULT_MODEL = "models:/ucr@champion"
CHECKPOINT_FILE = "checkpoint.pt"
CARD_FILE = "ucr.json"

_REGISTRY_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelSource:
    """A model reference resolved to one concrete checkpoint.

    ``reference`` is what the user configured; ``name``/``version``/``alias`` are set for registry references
    (``version`` pinned at resolution time, so moving an alias later does not change what was loaded).
    ``checkpoint`` is the local path or URI handed to ``Pipeline.from_checkpoint``; ``workdir`` is a temporary folder
    this process owns (downloaded artifacts) and removes with :meth:`cleanup`.
    """

    reference: str
    checkpoint: str
    name: str
    version: str | None = None
    alias: str | None = None
    card: dict = field(default_factory=dict)  # ucr.json of the registered version, when there is one
    workdir: str | None = None

    @property
    def identity(self) -> tuple:
        """Two sources with the same identity hold the same weights (used to skip needless reloads)."""
        return (self.name, self.version) if self.version is not None else (self.checkpoint,)

    @property
    def public_reference(self) -> str:
        """What clients are told the model is: a registry reference as configured; for a checkpoint path or URI
        only its readable name (the server's folders and buckets are not the client's business)."""
        return self.reference if self.version is not None or self.reference.startswith("models:/") else self.name

    def describe(self) -> dict:
        """The model's identity as clients see it (``/model``, response headers): no local paths."""
        return {"name": self.name, "version": self.version, "alias": self.alias, "source": self.public_reference}

    def cleanup(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def parse_registry_reference(reference: str) -> tuple[str, str | None, str | None] | None:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3"); other URIs -> None."""
    if not reference.startswith("models:/"):
        return None
    match = _REGISTRY_REF.match(reference)
    if match is None:
        raise ValueError(f"model reference {reference!r} is not understood; use models:/<name>@<alias>, "
                         f"models:/<name>/<version>, or a checkpoint path or s3:// URI")
    return match["name"], match["alias"], match["version"]


def resolve(reference: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> ModelSource:
    """Turn a configured reference into a :class:`ModelSource` (downloading registry artifacts to a temp folder)."""
    reference = reference.strip()
    if not reference:
        raise ValueError(f"the model reference is empty; set UCR_MODEL (e.g. {DEFAULT_MODEL}) or a checkpoint URI")
    parsed = parse_registry_reference(reference)
    if parsed is None:
        return ModelSource(reference=reference, checkpoint=reference, name=checkpoint_name(reference))
    name, alias, version = parsed
    return _resolve_registry(reference, name, alias, version, tracking_uri, registry_uri)


def checkpoint_name(uri: str) -> str:
    """A readable name for a checkpoint URI: the file's stem, or its run folder for final.pt / step-*.pt."""
    parts = [part for part in uri.rstrip("/").split("/") if part]
    stem = parts[-1][:-3] if parts[-1].endswith(".pt") else parts[-1]
    if stem in ("final", "checkpoint") or stem.startswith("step-"):
        run = parts[-3] if len(parts) >= 3 and parts[-2] == "checkpoints" else parts[-2] if len(parts) >= 2 else stem
        return run
    return stem


def _resolve_registry(reference: str, name: str, alias: str | None, version: str | None,
                      tracking_uri: str | None, registry_uri: str | None) -> ModelSource:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    where = tracking_uri or mlflow.get_tracking_uri()
    if alias is not None:
        try:
            version = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as err:
            raise ValueError(f"{reference}: no version of registered model {name!r} has alias {alias!r} in the "
                             f"registry at {where} ({err.message})") from None
    workdir = tempfile.mkdtemp(prefix=f"ucr-serve-{name}-v{version}-")
    try:
        # The pinned version, not the alias: the alias may move between the lookup and the download.
        folder = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=workdir,
                                                     tracking_uri=tracking_uri, registry_uri=registry_uri)
    except MlflowException as err:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"{reference}: could not download version {version} from the registry at {where} "
                         f"({err.message})") from None
    checkpoint = os.path.join(folder, CHECKPOINT_FILE)
    if not os.path.isfile(checkpoint):
        shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"{reference}: version {version} has no {CHECKPOINT_FILE} in its artifacts "
                         f"(found {sorted(os.listdir(folder))}); register it with the UCR register job")
    card = {}
    card_path = os.path.join(folder, CARD_FILE)
    if os.path.isfile(card_path):
        try:
            with open(card_path, encoding="utf-8") as handle:
                card = json.load(handle)
        except (OSError, ValueError):
            card = {}  # the card is informative only; a damaged one does not block serving
    return ModelSource(reference=reference, checkpoint=checkpoint, name=name, version=version, alias=alias,
                       card=card if isinstance(card, dict) else {}, workdir=workdir)
