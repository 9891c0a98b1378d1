"""Stage 5 — register the trained model (the prior checkpoint, which embeds its decomposer and codec settings, or
the decomposer alone) as a new version in the MLflow Model Registry. The evaluate stage decides the alias.

The version is an MLflow ``pyfunc`` model logged from code (``jobs/pyfunc_model.py``: a ``PythonModel`` around
``ucr.pipeline.Pipeline``), so stock MLflow tooling works on it::

    mlflow.pyfunc.load_model("models:/ucr@champion").predict(frame, params={"steps": 10})
    mlflow models serve -m models:/ucr@champion --env-manager local --host 127.0.0.1 --port 5001

with a signature (``audio`` + ``sample_rate`` in; one row per component out; params ``steps``, ``mode``, ``seed``),
an input example, the trained sources in its metadata and a description. Its artifacts are ``checkpoint.pt`` (read
by the data-only checkpoint loader: nothing is unpickled) and ``ucr.json`` (what it is); the Serve application and
``ucr separate`` read ``models:/<name>@<alias>`` from them.

    python -m jobs.register --preset demo --out runs/demo [--model-name ucr]
"""

from __future__ import annotations

import json
import os
import tempfile

from jobs import common
from ucr import storage
from ucr.models import REGISTERED_CARD_FILE, REGISTERED_CHECKPOINT_FILE

PYFUNC_MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyfunc_model.py")
EXAMPLE_SAMPLE_RATE = 8000  # the input example: a short tone at a low rate (the model resamples), kept small


def model_checkpoint(root: str) -> str:
    paths = common.layout(root)
    prior = storage.join(paths["prior"], "final.pt")
    if storage.exists(prior):
        return prior
    decomposer = storage.join(paths["decomposer"], "final.pt")
    if storage.exists(decomposer):
        return decomposer
    raise ValueError(f"no trained model under {root}: run jobs.train (and jobs.prior) first")


def signature(steps: int, mode: str):
    """Audio in (one clip per row), components out (one row per clip and component); params with the model's
    defaults."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(Array("double"), "audio"), ColSpec("long", "sample_rate")])
    outputs = Schema([ColSpec("long", "input"), ColSpec("long", "component"), ColSpec("string", "name"),
                      ColSpec("long", "sample_rate"), ColSpec(Array("double"), "audio")])
    params = ParamSchema([ParamSpec("steps", "long", int(steps)), ParamSpec("mode", "string", mode),
                          ParamSpec("seed", "long", 0)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example():
    """A quarter second of two tones, mono, at :data:`EXAMPLE_SAMPLE_RATE`."""
    import numpy as np
    import pandas as pd

    t = np.arange(EXAMPLE_SAMPLE_RATE // 4) / EXAMPLE_SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 440 * t)
    return pd.DataFrame({"audio": [np.round(wave, 4).astype(np.float32).tolist()],
                         "sample_rate": [EXAMPLE_SAMPLE_RATE]})


def describe(card: dict) -> str:
    """The version's description: what the model is, where it came from, how to use it."""
    sources = ", ".join(card["sources"] or []) or "unknown"
    return (f"UCR {card['kind']} model: {card['n_components']} components learned without labels from mixtures of "
            f"{sources} ({card['codec_name']} latents, {card['sample_rate']} Hz), step {card['step']}, run "
            f"{card['run_name']} (preset {card['preset']}). Separates audio into its components "
            f"(pyfunc: columns audio + sample_rate in, one row per component out; params steps, mode, seed)"
            + (", and generates and varies music through the Serve app" if card["has_prior"] else "") + ". "
            f"The evaluate stage names the components by source on validation (tag ucr.component_sources).")


def run(args) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from ucr import checkpoint as ckpt

    config = common.config_from(args)
    root = common.experiment_root(args, config)
    source = getattr(args, "model", None) or model_checkpoint(root)
    payload = ckpt.load(source)
    decomposer = payload["decomposer"] if payload["kind"] == "prior" else payload  # the separating model
    model_config = decomposer["config"]
    with common.stage_run(args, config, "register") as child:
        card = {"kind": payload["kind"], "source": source, "step": payload.get("step"),
                "codec": payload.get("codec"), "codec_name": model_config["codec"]["name"],
                "sample_rate": (payload.get("codec") or {}).get("sample_rate", 24000),
                "sources": payload.get("sources") or decomposer.get("sources"),
                "n_components": model_config["model"]["n_components"],
                "component_sources": payload.get("component_sources"),
                "has_prior": payload["kind"] == "prior", "preset": config.name,
                "run_name": common.run_name(args, config)}
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = os.path.join(folder, REGISTERED_CHECKPOINT_FILE)
            with open(checkpoint, "wb") as handle:
                handle.write(storage.read_bytes(source))
            card_path = os.path.join(folder, REGISTERED_CARD_FILE)
            with open(card_path, "w") as handle:
                json.dump(card, handle, indent=1, default=str)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=PYFUNC_MODEL_FILE,
                artifacts={"checkpoint": checkpoint, "card": card_path},
                signature=signature(model_config["diffusion"]["sampler_steps"],
                                    model_config["diffusion"]["separation"]),
                input_example=input_example(),
                pip_requirements=[f"ucr=={_version()}", f"mlflow=={mlflow.__version__}"],
                metadata={"ucr_kind": payload["kind"], "sources": card["sources"],
                          "n_components": card["n_components"], "sample_rate": card["sample_rate"]})
        tags = {"ucr.run_name": common.run_name(args, config), "ucr.kind": payload["kind"]}
        version = mlflow.register_model(info.model_uri, args.model_name, tags=tags)
        client = MlflowClient(common.tracking_uri())
        client.update_model_version(args.model_name, version.version, description=describe(card))
        if not client.get_registered_model(args.model_name).description:
            client.update_registered_model(args.model_name, description=(
                "Unsupervised composable audio representations: each version separates a mixture into the "
                "components its decomposer learned (MLflow pyfunc; see jobs/register.py). The champion alias "
                "goes to a version only when it beats the mixture passthrough, the stronger NMF baseline and the "
                "previous champion on validation (the reason is on each version)."))
        result = {"model_name": args.model_name, "version": int(version.version), "checkpoint": source,
                  "model_uri": info.model_uri}
        common.print_result("register", result)
        return result


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ucr")
    except PackageNotFoundError:  # a source checkout on the path, not installed
        return "0.1.0"


def parser():
    parser = common.base_parser(__doc__)
    parser.add_argument("--model-name", default="ucr", help="registered model name (default: ucr)")
    parser.add_argument("--model", help="checkpoint to register (default: the experiment's prior, else decomposer)")
    return parser


def main() -> None:
    common.run_main(lambda: run(parser().parse_args()))


if __name__ == "__main__":
    main()
