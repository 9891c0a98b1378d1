"""Stage 6 — evaluate on the validation and test splits, log the tables, figures and audio to MLflow, and move the
registry alias (``champion``) to this run's model version only when it beats the current champion on the
validation metric (mean SI-SDRi over sources, windowed, fixed matching, original stems). The fixed component ->
source assignment found on validation is written into the model's checkpoint and tagged on its registered version
(``ucr.component_sources``), so separated files carry source names.

    python -m jobs.evaluate --preset demo --out runs/demo [--model-name ucr] [--alias champion]
"""

from __future__ import annotations

import math
import os
import tempfile

from jobs import common
from ucr import storage

VALIDATION_METRIC = "val_si_sdri"


def headline(report: dict, method: str = "ucr") -> dict[str, float]:
    """Mean SI-SDRi/SI-SDR/SI-SIR/SI-SAR per source and overall (windowed, fixed or labelled, original)."""
    out = {}
    for source in report["sources"]:
        rows = [r for r in report["results"] if r["method"] == method and r["source"] == source
                and r["reference"] == "original" and r["protocol"] == "windowed"
                and r["matching"] in ("fixed", "labelled")]
        for metric in ("si_sdri", "si_sdr", "si_sir", "si_sar"):
            out[f"{metric}_{source}"] = rows[0][metric]["mean"] if rows else float("nan")
    values = [out[f"si_sdri_{s}"] for s in report["sources"]]
    out["si_sdri"] = sum(values) / len(values)
    return out


def log_report(report: dict, prefix: str, folder: str) -> None:
    import mlflow

    metrics = {}
    for method in dict.fromkeys(r["method"] for r in report["results"]):
        for key, value in headline(report, method).items():
            if math.isfinite(value):
                metrics[f"{prefix}_{method.replace(' ', '_')}_{key}"] = value
    diagnostics = report.get("diagnostics", {})
    for k, row in enumerate(diagnostics.get("component_x_source", [])):  # does a decomposition exist at all?
        for source, value in zip(diagnostics["sources"], row):
            if math.isfinite(value):
                metrics[f"{prefix}_diag_component{k}_{source}_si_sdr"] = value
    correlation = diagnostics.get("z_correlation", [])
    for k in range(len(correlation)):
        for j in range(k + 1, len(correlation)):
            metrics[f"{prefix}_diag_z_corr_{k}_{j}"] = correlation[k][j]
    mlflow.log_metrics(metrics)
    for name in ("report.md", "report.json", "spectrograms.png"):
        path = storage.join(folder, name)
        if storage.exists(path):
            common.log_uri_artifact(path, artifact_path=f"{prefix}_report")
    audio_folder = storage.join(folder, "audio")
    if storage.exists(audio_folder):
        common.log_uri_artifact(audio_folder, artifact_path=f"{prefix}_report")


def promote(model_name: str, alias: str, run_name: str, score: float,
            component_sources: list | None = None) -> dict:
    """Tag this run's newest registered version with the score (and which source each component stands for); move
    ``alias`` to it if it beats the holder."""
    import json

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ucr.models import COMPONENT_SOURCES_TAG

    client = MlflowClient(common.tracking_uri())
    versions = client.search_model_versions(f"name = '{model_name}' and tags.`ucr.run_name` = '{run_name}'")
    if not versions:
        return {"promoted": False, "reason": f"no version of {model_name!r} registered by run {run_name!r}"}
    version = max(versions, key=lambda v: int(v.version))
    client.set_model_version_tag(model_name, version.version, VALIDATION_METRIC, f"{score:.6f}")
    if component_sources is not None:
        client.set_model_version_tag(model_name, version.version, COMPONENT_SOURCES_TAG, json.dumps(component_sources))
    try:
        holder = client.get_model_version_by_alias(model_name, alias)
        held = float(holder.tags.get(VALIDATION_METRIC, "-inf"))
    except MlflowException:
        holder, held = None, -math.inf
    better = math.isfinite(score) and score > held
    if better:
        client.set_registered_model_alias(model_name, alias, version.version)
    return {"promoted": better, "version": int(version.version), "score": score,
            "previous": None if holder is None else {"version": int(holder.version), "score": held}}


def run(args) -> dict:
    import mlflow

    from ucr.data.latents import resolve_cache
    from ucr.evaluate import EvalOptions, component_sources, evaluate, markdown_table, store_component_sources
    from ucr.pipeline import Pipeline

    config = common.config_from(args)
    root = common.experiment_root(args, config)
    paths = common.layout(root)
    from jobs.register import model_checkpoint

    model_uri = getattr(args, "model", None) or model_checkpoint(root)
    supervised_uri = storage.join(paths["supervised"], "final.pt")
    with common.stage_run(args, config, "evaluate"):
        pipeline = Pipeline.from_checkpoint(model_uri)
        supervised = Pipeline.from_checkpoint(supervised_uri) if storage.exists(supervised_uri) else None
        steps = args.steps or config.diffusion.sampler_steps
        reports = {}
        for split in ("validation", "test"):
            out = storage.join(paths["reports"], split)
            options = EvalOptions(steps=steps, max_chunks=args.max_chunks,
                                  steps_curve=tuple(args.steps_curve) if split == "test" else ())
            reports[split] = evaluate(pipeline, resolve_cache(paths["latents"], split), out, options,
                                      supervised=supervised)
            log_report(reports[split], "val" if split == "validation" else "test", out)
        if pipeline.prior is not None:
            from ucr.generation import evaluate_generation

            out = storage.join(paths["reports"], "test")
            generation = evaluate_generation(pipeline, resolve_cache(paths["latents"], "test"), out,
                                             n=args.generate_n, steps=steps)
            mlflow.log_metrics({"gen_frechet_mixture": generation["mixture_latent_frames"]["generated"]["frechet"],
                                "gen_frechet_components": generation["component_patches"]["generated"]["frechet"],
                                "gen_consistency_si_sdr": generation["consistency_si_sdr"]["mean"]})
            common.log_uri_artifact(storage.join(out, "generation_report.md"), artifact_path="test_report")
            generated = pipeline.generate(n=1, seconds=4.0, seed=0, steps=steps)
            with tempfile.TemporaryDirectory() as folder:
                from ucr import audio

                audio.write(os.path.join(folder, "generated_mixture.wav"), generated["mixture"][0][None],
                            generated["sample_rate"])
                mlflow.log_artifact(os.path.join(folder, "generated_mixture.wav"), artifact_path="generated")
        score = headline(reports["validation"])["si_sdri"]
        mlflow.log_metric(VALIDATION_METRIC, score)
        # the fixed component -> source assignment on validation names the outputs of `ucr separate` and Serve
        sources = component_sources(reports["validation"])
        store_component_sources(model_uri, sources)
        mlflow.log_dict({"component_sources": sources}, "component_sources.json")
        promotion = promote(args.model_name, args.alias, common.run_name(args, config), score, sources)
        mlflow.log_dict(promotion, "promotion.json")
        table = markdown_table(reports["test"])
        print("\nSeparation on the test split (windowed, fixed matching, original stems; mean ± 95% CI, dB):\n")
        print(table + "\n")
        result = {"val_si_sdri": score, "test": headline(reports["test"]), "promotion": promotion,
                  "reports": paths["reports"]}
        common.print_result("evaluate", {k: v for k, v in result.items() if k != "test"})
        return result


def parser():
    parser = common.base_parser(__doc__)
    parser.add_argument("--model-name", default="ucr", help="registered model name (default: ucr)")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--model", help="checkpoint to evaluate (default: the experiment's prior, else decomposer)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: diffusion.sampler_steps)")
    parser.add_argument("--max-chunks", type=int, help="evaluate at most N chunks per split")
    parser.add_argument("--steps-curve", type=int, nargs="*", default=[],
                        help="also measure RTF and SI-SDRi at these step counts on the test split")
    parser.add_argument("--generate-n", type=int, default=8, help="excerpts generated for the generation metrics")
    return parser


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
