"""Stage 5 — register the trained model (the prior checkpoint, which embeds its decomposer and codec settings, or
the decomposer alone) as a new version in the MLflow Model Registry. The evaluate stage decides the alias.

The version's artifact folder holds ``checkpoint.pt``, ``ucr.json`` (what it is) and a minimal ``MLmodel``; the
Serve application loads ``models:/<name>@<alias>`` from it.

    python -m jobs.register --preset demo --out runs/demo [--model-name ucr]
"""

from __future__ import annotations

import json
import os
import tempfile

from jobs import common
from ucr import storage


def model_checkpoint(root: str) -> str:
    paths = common.layout(root)
    prior = storage.join(paths["prior"], "final.pt")
    if storage.exists(prior):
        return prior
    decomposer = storage.join(paths["decomposer"], "final.pt")
    if storage.exists(decomposer):
        return decomposer
    raise ValueError(f"no trained model under {root}: run jobs.train (and jobs.prior) first")


def run(args) -> dict:
    import mlflow

    from ucr.train import checkpoint as ckpt

    config = common.config_from(args)
    root = common.experiment_root(args, config)
    source = getattr(args, "model", None) or model_checkpoint(root)
    payload = ckpt.load(source)
    with common.stage_run(args, config, "register") as child:
        description = {"kind": payload["kind"], "source": source, "step": payload.get("step"),
                       "codec": payload.get("codec"), "sources": payload.get("sources"),
                       "has_prior": payload["kind"] == "prior", "preset": config.name,
                       "run_name": common.run_name(args, config)}
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "checkpoint.pt"), "wb") as handle:
                handle.write(storage.read_bytes(source))
            with open(os.path.join(folder, "ucr.json"), "w") as handle:
                json.dump(description, handle, indent=1, default=str)
            with open(os.path.join(folder, "MLmodel"), "w") as handle:
                handle.write("artifact_path: model\nflavors:\n  ucr:\n    checkpoint: checkpoint.pt\n"
                             f"    kind: {payload['kind']}\n")
            mlflow.log_artifacts(folder, artifact_path="model")
        version = mlflow.register_model(f"runs:/{child.info.run_id}/model", args.model_name,
                                        tags={"ucr.run_name": common.run_name(args, config),
                                              "ucr.kind": payload["kind"]})
        result = {"model_name": args.model_name, "version": int(version.version), "checkpoint": source}
        common.print_result("register", result)
        return result


def parser():
    parser = common.base_parser(__doc__)
    parser.add_argument("--model-name", default="ucr", help="registered model name (default: ucr)")
    parser.add_argument("--model", help="checkpoint to register (default: the experiment's prior, else decomposer)")
    return parser


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
