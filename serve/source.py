"""Where the served model comes from: an MLflow registry reference or a checkpoint URI.

``models:/<name>@<alias>`` (the default, ``models:/ucr@champion``) or ``models:/<name>/<version>`` is looked up in the
MLflow model registry; the registered version is a pyfunc model whose ``artifacts/`` hold ``checkpoint.pt`` and
``ucr.json`` (versions registered before the pyfunc format hold them at the top of the folder), the contract of
the register job. Only the checkpoint is read, as data: the version's pyfunc code is never run here. Anything else is a checkpoint file or run folder, local or
``s3://``, that :meth:`ucr.pipeline.Pipeline.from_checkpoint` reads directly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from ucr.models import (COMPONENT_SOURCES_TAG, PROMOTION_TAG, REGISTERED_CARD_FILE, REGISTERED_CHECKPOINT_FILE,
                        VALIDATION_SCORE_TAG, checkpoint_name, parse_registry_reference)
from ucr.models import DEFAULT_REGISTRY_MODEL as DEFAULT_MODEL

CHECKPOINT_FILE = REGISTERED_CHECKPOINT_FILE
CARD_FILE = REGISTERED_CARD_FILE
ARTIFACT_FOLDERS = ("artifacts", "")  # where a version keeps them: the pyfunc's artifacts/, else the top (older)

__all__ = ["DEFAULT_MODEL", "ModelSource", "checkpoint_name", "parse_registry_reference", "resolve"]


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


def resolve(reference: str, tracking_uri: str | None = None, registry_uri: str | None = None,
            workdir: str | None = None) -> ModelSource:
    """Turn a configured reference into a :class:`ModelSource`, downloading registry artifacts to a new temporary
    folder (or into ``workdir``, a folder the caller owns and removes)."""
    reference = reference.strip()
    if not reference:
        raise ValueError(f"the model reference is empty; set UCR_MODEL (e.g. {DEFAULT_MODEL}) or a checkpoint URI")
    parsed = parse_registry_reference(reference)
    if parsed is None:
        return ModelSource(reference=reference, checkpoint=reference, name=checkpoint_name(reference))
    name, alias, version = parsed
    return _resolve_registry(reference, name, alias, version, tracking_uri, registry_uri, workdir)


def _resolve_registry(reference: str, name: str, alias: str | None, version: str | None,
                      tracking_uri: str | None, registry_uri: str | None, workdir: str | None = None) -> ModelSource:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    where = tracking_uri or mlflow.get_tracking_uri()
    try:
        if alias is not None:
            registered = client.get_model_version_by_alias(name, alias)
            version = str(registered.version)
        else:
            registered = client.get_model_version(name, version)
    except MlflowException as err:
        what = f"no version of registered model {name!r} has alias {alias!r}" if alias is not None else \
            f"registered model {name!r} has no version {version}"
        raise ValueError(f"{reference}: {what} in the registry at {where} ({err.message})") from None
    owned = workdir is None
    workdir = tempfile.mkdtemp(prefix=f"ucr-serve-{name}-v{version}-") if owned else workdir
    try:
        # The pinned version, not the alias: the alias may move between the lookup and the download.
        folder = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=workdir,
                                                     tracking_uri=tracking_uri, registry_uri=registry_uri)
    except MlflowException as err:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"{reference}: could not download version {version} from the registry at {where} "
                         f"({err.message})") from None
    within = next((os.path.join(folder, sub) for sub in ARTIFACT_FOLDERS
                   if os.path.isfile(os.path.join(folder, sub, CHECKPOINT_FILE))), folder)
    checkpoint = os.path.join(within, CHECKPOINT_FILE)
    if not os.path.isfile(checkpoint):
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
        raise ValueError(f"{reference}: version {version} has no {CHECKPOINT_FILE} in its artifacts "
                         f"(found {sorted(os.listdir(folder))}); register it with the UCR register job")
    card = {}
    card_path = os.path.join(within, CARD_FILE)
    if os.path.isfile(card_path):
        try:
            with open(card_path, encoding="utf-8") as handle:
                card = json.load(handle)
        except (OSError, ValueError):
            card = {}  # the card is informative only; a damaged one does not block serving
    card = card if isinstance(card, dict) else {}
    if registered.tags.get(COMPONENT_SOURCES_TAG):  # set by the evaluate stage, after registration
        try:
            card["component_sources"] = json.loads(registered.tags[COMPONENT_SOURCES_TAG])
        except ValueError:
            pass  # informative only, like the card
    if registered.tags.get(VALIDATION_SCORE_TAG):  # the evaluate stage's validation score and promotion decision
        card["validation_si_sdri_db"] = registered.tags[VALIDATION_SCORE_TAG]
    if registered.tags.get(PROMOTION_TAG):
        card["promotion"] = registered.tags[PROMOTION_TAG]
    return ModelSource(reference=reference, checkpoint=checkpoint, name=name, version=version, alias=alias,
                       card=card, workdir=workdir if owned else None)


def _missing(err) -> bool:
    """An MLflow error that means "no such model, version or alias" (not "the registry did not answer")."""
    return getattr(err, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def main(argv: list[str] | None = None) -> int:
    """``python -m serve.source REFERENCE --dst FOLDER [--if-exists]``: download a registered version into FOLDER
    and print one JSON line (checkpoint, name, version, alias, card) — how the ``ucr`` command, which never imports
    MLflow, reads the registry. With ``--if-exists`` a missing model or alias prints ``null``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m serve.source", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", help="models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("--dst", required=True, help="folder to download the version's artifacts into")
    parser.add_argument("--if-exists", action="store_true", help="print null when there is no such model or alias")
    args = parser.parse_args(argv)
    try:
        if parse_registry_reference(args.reference) is None:
            raise ValueError(f"{args.reference!r} is not a registry reference (models:/<name>@<alias>)")
        if args.if_exists and not _registered(args.reference):
            print("null")
            return 0
        source = resolve(args.reference, workdir=args.dst)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": source.checkpoint, "name": source.name, "version": source.version,
                      "alias": source.alias, "card": source.card}, default=str))
    return 0


def _registered(reference: str) -> bool:
    """Whether the registry holds the model version or alias ``reference`` names (a ValueError when it does not
    answer)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_registry_reference(reference)
    client = MlflowClient()
    try:
        if alias is not None:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, version)
    except MlflowException as err:
        if _missing(err):
            return False
        raise ValueError(f"the registry at {client.tracking_uri} did not answer ({err.message})") from None
    return True


if __name__ == "__main__":
    sys.exit(main())
