"""Stage 6 — evaluate on the validation and test splits, log the tables, figures and audio to MLflow, and move the
registry alias (``champion``) to this run's model version only when it beats, on the validation metric (mean
SI-SDRi over sources, windowed, fixed matching, original stems), the mixture passthrough (0 dB), the stronger NMF
baseline and the current champion; the reason is recorded on the version (tag ``ucr.promotion`` and description). The fixed component ->
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
from ucr.models import PROMOTION_TAG, VALIDATION_SCORE_TAG

VALIDATION_METRIC = VALIDATION_SCORE_TAG  # the run metric and the version tag share the name


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


def metric_names(report: dict, split: str) -> dict[str, float]:
    """The report's headline numbers as MLflow metrics named for the UI's grouping and with their protocol:
    ``{split}/{metric}/{source}/{protocol}_{matching}`` for the model (e.g. ``test/si_sdri/Drums/windowed_fixed``,
    ``mean`` over sources), ``{split}_baselines/{method}/si_sdri/{source}/...`` for the other methods, and
    ``{split}_diagnostics/...`` for the per-component diagnostics. Only the original stems (end to end)."""
    from ucr.evaluate import UNLABELLED

    metrics = {}
    for row in report["results"]:
        if row["reference"] != "original" or row["protocol"] != "windowed" or \
                row["matching"] not in ("fixed", "labelled"):
            continue
        protocol = f"{row['protocol']}_{row['matching']}"
        if row["method"] == "ucr":
            for metric in ("si_sdri", "si_sdr", "si_sir", "si_sar"):
                metrics[f"{split}/{metric}/{row['source']}/{protocol}"] = row[metric]["mean"]
        else:
            method = row["method"].replace(" ", "_")
            metrics[f"{split}_baselines/{method}/si_sdri/{row['source']}/{protocol}"] = row["si_sdri"]["mean"]
    for method in dict.fromkeys(r["method"] for r in report["results"]):
        mean = headline(report, method)["si_sdri"]
        prefix = split if method == "ucr" else f"{split}_baselines/{method.replace(' ', '_')}"
        metrics[f"{prefix}/si_sdri/mean/windowed_" + ("fixed" if method in UNLABELLED else "labelled")] = mean
    diagnostics = report.get("diagnostics", {})
    for k, row in enumerate(diagnostics.get("component_x_source", [])):  # does a decomposition exist at all?
        for source, value in zip(diagnostics["sources"], row):
            metrics[f"{split}_diagnostics/si_sdr_whole/component{k}/{source}"] = value
    correlation = diagnostics.get("z_correlation", [])
    for k in range(len(correlation)):
        for j in range(k + 1, len(correlation)):
            metrics[f"{split}_diagnostics/z_correlation/{k}_{j}"] = correlation[k][j]
    return {name: float(value) for name, value in metrics.items() if math.isfinite(value)}


def log_report(report: dict, prefix: str, folder: str) -> None:
    import mlflow

    mlflow.log_metrics(metric_names(report, prefix))
    for name in ("report.md", "report.json", "spectrograms.png"):
        path = storage.join(folder, name)
        if storage.exists(path):
            common.log_uri_artifact(path, artifact_path=f"{prefix}_report")
    audio_folder = storage.join(folder, "audio")
    if storage.exists(audio_folder):
        common.log_uri_artifact(audio_folder, artifact_path=f"{prefix}_report")


PASSTHROUGH = "mixture passthrough"
NMF_METHODS = ("nmf", "nmf-32 clustered")


def promotion_bars(report: dict) -> dict[str, float]:
    """What a model must beat on a validation report besides the holder of the alias: the mixture passthrough (its
    SI-SDRi is 0 dB by definition: doing nothing) and the stronger of the NMF baselines, each by the same mean
    SI-SDRi over sources (windowed, fixed matching, original stems) that ranks the models."""
    bars = {PASSTHROUGH: 0.0}
    nmf = {method: headline(report, method)["si_sdri"] for method in NMF_METHODS}
    nmf = {method: value for method, value in nmf.items() if math.isfinite(value)}
    if nmf:
        stronger = max(nmf, key=nmf.get)
        bars[stronger] = nmf[stronger]
    return bars


def promote(model_name: str, alias: str, run_name: str, score: float,
            component_sources: list | None = None, bars: dict[str, float] | None = None) -> dict:
    """Tag this run's newest registered version with its validation score (and which source each component stands
    for), and move ``alias`` to it only when the score beats every bar and the current holder.

    ``score`` is the mean validation SI-SDRi over sources. The rule is on the mean, not on every source: a model
    that is better than doing nothing on average may still be below the mixture on one source, and the
    per-source numbers stay in the report. ``bars`` (:func:`promotion_bars`) always includes the mixture
    passthrough at 0 dB, so a model worse than doing nothing is never promoted, even when no version holds the
    alias. The reason, either way, goes on the version as the ``ucr.promotion`` tag and in its description."""
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
    bars = {PASSTHROUGH: 0.0, **(bars or {})}
    if holder is not None and str(holder.version) != str(version.version):
        bars[f"{alias} (version {holder.version})"] = held
    failed = {name: bar for name, bar in bars.items() if not (math.isfinite(score) and score > bar)}
    beaten = ", ".join(f"{name} ({bar:+.2f} dB)" for name, bar in bars.items() if name not in failed)
    if failed:
        reason = (f"not promoted to {alias!r}: mean validation SI-SDRi {score:+.2f} dB does not beat "
                  + ", ".join(f"{name} ({bar:+.2f} dB)" for name, bar in failed.items()))
    else:
        reason = f"promoted to {alias!r}: mean validation SI-SDRi {score:+.2f} dB beats {beaten}"
        client.set_registered_model_alias(model_name, alias, version.version)
    client.set_model_version_tag(model_name, version.version, PROMOTION_TAG, reason)
    description = (version.description or "").split("Promotion: ")[0].rstrip()  # a rerun replaces the last reason
    client.update_model_version(model_name, version.version,
                                description=(description + "\n\n" if description else "") + f"Promotion: {reason}")
    return {"promoted": not failed, "version": int(version.version), "score": score, "reason": reason,
            "bars": bars, "previous": None if holder is None else {"version": int(holder.version), "score": held}}


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
            mlflow.log_metrics({
                "test_generation/frechet/mixture_latent_frames": generation["mixture_latent_frames"]["generated"][
                    "frechet"],
                "test_generation/frechet/component_patches": generation["component_patches"]["generated"]["frechet"],
                "test_generation/consistency_si_sdr/mean": generation["consistency_si_sdr"]["mean"]})
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
        promotion = promote(args.model_name, args.alias, common.run_name(args, config), score, sources,
                            bars=promotion_bars(reports["validation"]))
        print(f"[evaluate] {promotion.get('reason')}", flush=True)
        mlflow.log_dict(promotion, "promotion.json")
        table = markdown_table(reports["test"])
        print("\nSeparation on the test split (windowed, fixed matching, original stems; mean ± 95% CI, dB):\n")
        print(table + "\n")
        result = {"val_si_sdri": score, "test": headline(reports["test"]), "promotion": promotion,
                  "reports": paths["reports"], "table": table}
        common.print_result("evaluate", {k: v for k, v in result.items() if k not in ("test", "table")})
        return result


def parser():
    parser = common.base_parser(__doc__)
    parser.add_argument("--model", help="checkpoint to evaluate (default: the experiment's prior, else decomposer)")
    common.add_evaluation_args(parser)
    return parser


def main() -> None:
    common.run_main(lambda: run(parser().parse_args()))


if __name__ == "__main__":
    main()
