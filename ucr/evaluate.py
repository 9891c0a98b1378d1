"""Separation evaluation (evaluation.md): the model and the baselines in one table, on a latent cache with stems.

For every chunk of the evaluation split the methods produce waveforms; unlabelled components are matched to
reference sources per example and once for the whole set (fixed: what a user gets); each estimate is scored with
SI-SDR / SI-SIR / SI-SAR / SI-SDRi on 4 s windows with a 2 s hop (windows with fewer than two active sources are
skipped, MSDM's protocol) and on whole chunks; against the original stems and against the codec-reconstructed stems.
Writes ``report.json``, ``report.md``, ``spectrograms.png`` and audio examples.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ucr import audio, baselines, metrics, storage
from ucr.data.latents import LatentCache
from ucr.pipeline import average_over_shifts

METRICS = ("si_sdr", "si_sir", "si_sar", "si_sdri")
UNLABELLED = {"ucr", "nmf", "nmf-32 clustered"}  # methods whose outputs carry no source labels (matched to sources)


@dataclass(frozen=True)
class EvalOptions:
    steps: int = 50  # sampler steps for the diffusion models
    mode: str | None = None  # separation mode (None: the model's diffusion.separation)
    seed: int = 0
    max_chunks: int | None = None  # evaluate the first N chunks only (None = all)
    batch_size: int = 8
    window_seconds: float = 4.0
    hop_seconds: float = 2.0
    nmf: bool = True
    nmf_iterations: int = 200
    irm: bool = True
    steps_curve: tuple[int, ...] = ()  # also time and score the model at these step counts (on curve_chunks)
    alpha: float | None = None  # one-pass blend level (None: the model's diffusion.one_pass_alpha)
    draws: int | None = None  # one-pass noise draws (None: the model's diffusion.one_pass_draws)
    residual_gain: str | None = None  # one_pass_residual's gains (None: the model's diffusion.residual_gain)
    mask_power: float | None = None  # the masks' power, codecs that decode as masks (None: diffusion.mask_power)
    shifts: int | None = None  # the shift trick's runs (None: diffusion.shifts)
    post_filter: str | None = None  # waveform post-filter (None: the model's diffusion.post_filter)
    alpha_curve: tuple[float, ...] = ()  # also score the one-pass modes at these alpha* (on curve_chunks)
    # also score the model on the inputs delayed by this many samples (None: half the codec's hop + 1, off every
    # power-of-two grid; 0: skip): a model that has learned where onsets sit in its frames fails it (research log W)
    alignment_delay: int | None = None
    curve_chunks: int = 16
    audio_examples: int = 2


@dataclass
class MethodOutputs:
    """Waveforms of one method for every chunk: ``[N, K or S, L]`` and whether they carry source labels."""

    name: str
    waves: list = field(default_factory=list)
    labelled: bool = True
    seconds: float = 0.0  # compute time


def _separate_chunks(model, codec, latents: torch.Tensor, steps: int, seed: int, batch_size: int,
                     length: int, mode: str = "independent", alpha: float = 0.3, draws: int = 4,
                     post_filter: str = "none", *, mixtures: np.ndarray, sample_rate: int = 0,
                     progress: str | None = None, residual_gain: str = "least_squares", mask_power: float = 1.0,
                     shifts: int = 1) -> tuple[list[np.ndarray], float]:
    """``latents [N, C, T]`` of the mixtures ``mixtures [N, L]`` -> list of component waves ``[K, L]`` and the
    compute seconds. The codec decodes the components against the mixtures (``decode_components``, masks to the
    power ``mask_power`` where the codec decodes as masks), and a
    ``post_filter`` other than "none" filters them against the mixtures, as the pipeline does. ``shifts`` > 1: the
    shift trick (:func:`ucr.pipeline.average_over_shifts`; the delayed mixtures are encoded again).
    ``progress``: the label of a bar per chunk on stderr (None: no bar).

    The blind choice of ``one_pass_residual`` is made once for all N chunks (as for the windows of one track)."""
    started = time.perf_counter()

    def separate_all(latents: torch.Tensor, mixtures: torch.Tensor) -> torch.Tensor:  # [N, C, T], [N, L'] -> [N, K, L']
        generator = torch.Generator().manual_seed(seed)
        with tqdm(total=len(latents), desc=progress, unit="chunk", leave=False, disable=progress is None,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total} {unit} [{elapsed}<{remaining}]") as bar:
            all_parts = model.separate_many(latents, batch_size, steps, generator, mode, alpha, draws,
                                            on_progress=lambda done: bar.update(done - bar.n),
                                            residual_gain=residual_gain)  # [N, K, C, T]
        return torch.cat([codec.decode_components(all_parts[i:i + batch_size], mixtures[i:i + batch_size],
                                                  mask_power)[..., :mixtures.shape[-1]]
                          for i in range(0, len(latents), batch_size)])

    mixture_waves = torch.as_tensor(np.asarray(mixtures), dtype=torch.float32)  # [N, L]
    if shifts == 1:
        out = list(separate_all(latents, mixture_waves)[..., :length].numpy())
    else:
        def separate_shifted(delayed: list[torch.Tensor]) -> list[torch.Tensor]:
            batch = torch.stack(delayed)  # [N, L'], whole frames
            return list(separate_all(codec.encode(batch[:, None]), batch))
        out = [w[:, :length].numpy() for w in average_over_shifts(separate_shifted, list(mixture_waves),
                                                                  codec.hop_length, shifts)]
    if post_filter != "none":
        out = [baselines.post_filter(post_filter, mixture, parts, sample_rate) for mixture, parts in zip(mixtures, out)]
    return out, time.perf_counter() - started


def _settings(pipeline, options: EvalOptions) -> dict:
    """The separation settings an evaluation uses: the options where given, else the model's config."""
    diffusion = pipeline.config.diffusion
    return {"mode": options.mode or diffusion.separation,
            "alpha": diffusion.one_pass_alpha if options.alpha is None else options.alpha,
            "draws": diffusion.one_pass_draws if options.draws is None else options.draws,
            "post_filter": options.post_filter or diffusion.post_filter,
            "residual_gain": options.residual_gain or diffusion.residual_gain,
            "mask_power": diffusion.mask_power if options.mask_power is None else options.mask_power,
            "shifts": diffusion.shifts if options.shifts is None else options.shifts}


def _score(method: MethodOutputs, references: np.ndarray, mixtures: np.ndarray, sample_rate: int,
           options: EvalOptions) -> tuple[list[dict], dict, list[dict]]:
    """Rows of summaries for one method against one reference kind; the assignments used; and one record per
    scored (window, source) under the matching a user gets (fixed, or the method's own labels):
    ``{"chunk", "start_s", "source", "si_sdr", "si_sir", "si_sar", "si_sdri"}`` (``source`` an index)."""
    N, S, L = references.shape
    per_example = []
    fixed = None
    if method.labelled:
        assignments = {"labelled": [metrics.Assignment(tuple(range(S)), S)] * N}
    else:
        matrices = [metrics.score_matrix(method.waves[i], references[i]) for i in range(N)]
        per_example = [metrics.match_per_example(matrices[i], method.waves[i], references[i]) for i in range(N)]
        fixed = metrics.match_fixed(matrices)
        assignments = {"per-example": per_example, "fixed": [fixed] * N}
    rows, windows = [], []
    for matching, chosen in assignments.items():
        windowed = {m: [] for m in METRICS}
        whole = {m: [] for m in METRICS}
        for i in range(N):
            estimates = metrics.apply_assignment(method.waves[i], chosen[i], S)
            w = metrics.windowed_scores(estimates, references[i], mixtures[i], sample_rate,
                                        options.window_seconds, options.hop_seconds)
            g = metrics.whole_signal_scores(estimates, references[i], mixtures[i])
            for m in METRICS:
                windowed[m].append(w[m])
                whole[m].append(g[m][None])
            if matching in ("fixed", "labelled"):
                windows += [{"chunk": i, "start_s": float(w["starts"][j]) / sample_rate, "source": s,
                             **{m: float(w[m][j, s]) for m in METRICS}}
                            for j in range(len(w["starts"])) for s in range(S) if w["active"][j, s]]
        for protocol, values in (("windowed", windowed), ("whole", whole)):
            for s in range(S):
                row = {"method": method.name, "matching": matching, "protocol": protocol, "source": s}
                for m in METRICS:
                    column = np.concatenate([v[:, s] for v in values[m] if len(v)]) if any(
                        len(v) for v in values[m]) else np.array([np.nan])
                    row[m] = metrics.summarize(column)
                rows.append(row)
    used = {"fixed": list(fixed.component_to_source)} if fixed is not None else {}
    return rows, used, windows


def evaluate(pipeline, cache_uri: str, out: str, options: EvalOptions = EvalOptions(), supervised=None,
             log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Evaluate ``pipeline`` (and the baselines, and optionally a ``supervised`` reference pipeline) on a cache
    encoded with stems; write the report to ``out`` and return it. ``progress``: a bar per chunk for each method
    that takes time (stderr)."""
    cache = LatentCache(cache_uri)
    if not cache.has_stems:
        raise ValueError(f"the cache at {cache_uri} has no stems; encode the evaluation split with --with-stems")
    cache.require_codec(pipeline.codec.fingerprint, "the model")
    count = cache.num_chunks if options.max_chunks is None else min(cache.num_chunks, options.max_chunks)
    items = [cache.item(i) for i in range(count)]
    sample_rate = pipeline.sample_rate
    codec = pipeline.codec
    source_names = list(cache.sources)
    S = len(source_names)
    stem_waves = np.stack([item["stem_waves"].numpy() for item in items])  # [N, S, L]
    mixtures = np.stack([item["mixture_wave"].numpy() for item in items])  # [N, L]
    N, _, L = stem_waves.shape
    mixture_latents = torch.stack([item["mixture"] for item in items])  # [N, C, T]
    stem_latents = torch.stack([item["stems"] for item in items])  # [N, S, C, T]
    codec_stems = codec.decode_components(stem_latents, torch.from_numpy(mixtures))[..., :L].numpy()  # [N, S, L]
    log(f"[evaluate] {N} chunks x {L / sample_rate:.1f} s, sources {source_names}, K = {pipeline.n_components}, "
        f"{options.steps} sampler steps")

    settings = _settings(pipeline, options)
    mode = settings["mode"]
    methods: list[MethodOutputs] = []
    def chunks(label: str):
        return tqdm(mixtures, desc=label, unit="chunk", leave=False, disable=not progress)

    waves, seconds = _separate_chunks(pipeline.model, codec, mixture_latents, options.steps, options.seed,
                                      options.batch_size, L, **settings, mixtures=mixtures, sample_rate=sample_rate,
                                      progress="ucr" if progress else None)
    methods.append(MethodOutputs("ucr", waves, labelled=False, seconds=seconds))
    if supervised is not None:
        waves, seconds = _separate_chunks(supervised.model, codec, mixture_latents, options.steps, options.seed,
                                          options.batch_size, L, **settings, mixtures=mixtures,
                                          sample_rate=sample_rate, progress="supervised" if progress else None)
        methods.append(MethodOutputs("supervised reference", waves, labelled=True, seconds=seconds))
    methods.append(MethodOutputs("mixture passthrough", [baselines.passthrough(m, S) for m in mixtures]))
    if options.nmf:
        started = time.perf_counter()
        waves = [baselines.nmf_separate(m, sample_rate, pipeline.n_components, iterations=options.nmf_iterations,
                                        seed=options.seed) for m in chunks("nmf")]
        methods.append(MethodOutputs("nmf", waves, labelled=False, seconds=time.perf_counter() - started))
        started = time.perf_counter()
        waves = [baselines.nmf_clustered_separate(m, sample_rate, pipeline.n_components,
                                                  iterations=options.nmf_iterations, seed=options.seed)
                 for m in chunks("nmf-32 clustered")]
        methods.append(MethodOutputs("nmf-32 clustered", waves, labelled=False,
                                     seconds=time.perf_counter() - started))
    if options.irm:
        methods.append(MethodOutputs("oracle IRM", [baselines.ideal_ratio_mask(m, s, sample_rate)
                                                    for m, s in zip(mixtures, stem_waves)]))
    methods.append(MethodOutputs("codec ceiling", list(codec_stems)))

    rows, assignments = [], {}
    model_windows: list[dict] = []  # the per-window records of methods[0] (the model) on the original stems
    scoring = tqdm(total=2 * len(methods), desc="scoring", unit="method", leave=False, disable=not progress)
    for reference_name, references in (("original", stem_waves), ("codec", codec_stems)):
        for method in methods:
            scoring.update()
            if method.name == "codec ceiling" and reference_name == "codec":
                continue  # identical by construction
            method_rows, used, windows = _score(method, references, mixtures, sample_rate, options)
            for row in method_rows + windows:
                row["source"] = source_names[row["source"]]
            for row in method_rows:
                row["reference"] = reference_name
            rows.extend(method_rows)
            if method is methods[0] and reference_name == "original":
                for row in windows:
                    row["track"], row["chunk_start_s"] = items[row["chunk"]]["track"], (
                        items[row["chunk"]]["start"] / sample_rate)
                model_windows = windows
            if used:
                assignments[f"{method.name}/{reference_name}"] = used
    scoring.close()
    audio_seconds = N * L / sample_rate
    report = {
        "model": pipeline.metadata, "cache": cache_uri, "n_chunks": N, "chunk_seconds": L / sample_rate,
        "sources": source_names, "n_components": pipeline.n_components, "options": asdict(options),
        "separation_mode": mode, "separation_settings": settings,
        "protocol": {
            "windows": f"{options.window_seconds:g} s windows, {options.hop_seconds:g} s hop; windows with fewer "
                       f"than 2 active sources (RMS > -60 dBFS) skipped; 'whole' = one window per chunk",
            "matching": "components carry no labels: 'per-example' = best assignment per chunk (Hungarian on "
                        "SI-SDR; K > S: each component to one source, summed per source); 'fixed' = one "
                        "assignment for the whole set (what a user gets); labelled methods use their own labels",
            "references": "'original' = the stems as rendered (end to end); 'codec' = stems encoded and decoded "
                          "by the codec (the paper's choice: excludes the codec's own loss)",
            "ci": "95% t-interval of the mean over windows (or chunks)",
        },
        "fixed_assignment": assignments,
        "rtf": {m.name: m.seconds / audio_seconds for m in methods if m.seconds},
        "results": rows,
        "windows": {"method": methods[0].name, "matching": "fixed", "reference": "original",
                    "rows": model_windows},
    }
    if options.steps_curve:
        report["steps_curve"] = steps_curve(pipeline, mixture_latents, stem_waves, mixtures, options, source_names)
    report["diagnostics"] = diagnostics(pipeline.model, methods[0].waves, stem_waves, mixture_latents, source_names)
    if options.alpha_curve:
        report["alpha_curve"] = alpha_curve(pipeline, mixture_latents, stem_waves, mixtures, options, source_names)
    if options.alignment_delay != 0:
        n = min(options.curve_chunks, N)
        aligned = _curve_point(methods[0].waves[:n], 0.0, stem_waves[:n], mixtures[:n], pipeline, options,
                               source_names)["si_sdri"]
        report["alignment_check"] = alignment_check(pipeline, stem_waves, mixtures, options, source_names, aligned)
        check = report["alignment_check"]
        drop = max(check["aligned"][s] - check["delayed"][s] for s in source_names)
        if drop > 3.0:
            log(f"[evaluate] WARNING: delayed by {check['delay_samples']} samples the model loses {drop:.1f} dB "
                f"SI-SDRi: it relies on where onsets sit in the codec's frames (a grid in the data? see "
                f"data.start_jitter)")
    report["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_report(report, out)
    write_examples(out, methods[0], stem_waves, mixtures, sample_rate, options.audio_examples, source_names)
    log(f"[evaluate] report: {storage.join(out, 'report.md')}")
    return report


def component_sources(report: dict) -> list[str | None]:
    """The source each of the model's K components stands for, from a report's fixed matching against the original
    stems (what a user gets); None for a component matched to no source. Computed on the validation split, it is
    what the pipeline names its outputs by (:func:`store_component_sources`)."""
    fixed = report["fixed_assignment"]["ucr/original"]["fixed"]  # [K] source index, -1 = none
    return [report["sources"][s] if s >= 0 else None for s in fixed]


def store_component_sources(checkpoint_uri: str, sources: list[str | None]) -> str:
    """Record in a checkpoint (file or run folder; rewritten atomically) which source each component stands for;
    :meth:`ucr.pipeline.Pipeline.from_checkpoint` reads it back. Returns the file written."""
    from ucr import checkpoint as ckpt

    resolved = ckpt.resolve(checkpoint_uri)
    payload = ckpt.load(resolved)
    K = payload["config"]["model"]["n_components"]
    if len(sources) != K:
        raise ValueError(f"{resolved} has {K} components, but {len(sources)} source names were given")
    payload["component_sources"] = list(sources)
    ckpt.save(resolved, payload)
    return resolved


def quick_separation_score(model, config, cache_uri: str, n_chunks: int = 8, steps: int = 5, seed: int = 0,
                           codec=None) -> dict[str, float]:
    """A fast validation proxy for sweeps: SI-SDRi of whole chunks on the first ``n_chunks`` of a cache with stems,
    components matched to sources once for the subset (fixed). Returns ``val_si_sdri`` (mean over sources) and
    ``val_si_sdri_<source>``. ``codec``: the one built from ``config.codec`` (built here when None; pass it when
    scoring repeatedly)."""
    from ucr.codec import build_codec

    cache = LatentCache(cache_uri)
    count = min(n_chunks, cache.num_chunks)
    items = [cache.item(i) for i in range(count)]
    references = np.stack([item["stem_waves"].numpy() for item in items])  # [N, S, L]
    mixtures = np.stack([item["mixture_wave"].numpy() for item in items])  # [N, L]
    latents = torch.stack([item["mixture"] for item in items])  # [N, C, T]
    was_training = model.training
    model.eval()
    codec = codec if codec is not None else build_codec(config.codec)
    waves, _ = _separate_chunks(model, codec, latents, steps, seed, 8, references.shape[-1],
                                config.diffusion.separation, config.diffusion.one_pass_alpha,
                                config.diffusion.one_pass_draws, config.diffusion.post_filter, mixtures=mixtures,
                                sample_rate=codec.sample_rate, residual_gain=config.diffusion.residual_gain,
                                mask_power=config.diffusion.mask_power, shifts=config.diffusion.shifts)
    model.train(was_training)
    matrices = [metrics.score_matrix(w, r) for w, r in zip(waves, references)]
    fixed = metrics.match_fixed(matrices)
    scores = np.stack([metrics.matched_scores(w, r, m, assignment=fixed)["si_sdri"]
                       for w, r, m in zip(waves, references, mixtures)])  # [N, S]
    per_source = np.nanmean(scores, axis=0)
    out = {"val_si_sdri": float(np.nanmean(per_source))}
    out.update({f"val_si_sdri_{name}": float(v) for name, v in zip(cache.sources, per_source)})
    return out


def steps_curve(pipeline, mixture_latents, stem_waves, mixtures, options: EvalOptions,
                source_names: list[str]) -> list[dict]:
    """Real-time factor and SI-SDRi (windowed, fixed matching, original references) per sampler step count."""
    n = min(options.curve_chunks, len(mixture_latents))
    L = stem_waves.shape[-1]
    points = []
    for steps in options.steps_curve:
        waves, seconds = _separate_chunks(pipeline.model, pipeline.codec, mixture_latents[:n], steps,
                                          options.seed, options.batch_size, L, **_settings(pipeline, options),
                                          mixtures=mixtures[:n], sample_rate=pipeline.sample_rate)
        points.append({"steps": steps, **_curve_point(waves, seconds, stem_waves[:n], mixtures[:n], pipeline,
                                                      options, source_names)})
    return points


def _curve_point(waves, seconds, stem_waves, mixtures, pipeline, options, source_names) -> dict:
    n, _, L = stem_waves.shape
    method = MethodOutputs("ucr", waves, labelled=False, seconds=seconds)
    rows, _, _ = _score(method, stem_waves, mixtures, pipeline.sample_rate, options)
    chosen = [r for r in rows if r["matching"] == "fixed" and r["protocol"] == "windowed"]
    return {"rtf": seconds / (n * L / pipeline.sample_rate),
            "si_sdri": {source_names[r["source"]]: r["si_sdri"]["mean"] for r in chosen}}


def alignment_check(pipeline, stem_waves, mixtures, options: EvalOptions, source_names: list[str],
                    aligned: dict[str, float]) -> dict | None:
    """SI-SDRi (windowed, fixed, original) of the model on the first ``curve_chunks`` mixtures ``[N, L]`` delayed by
    ``options.alignment_delay`` samples (zeros in front, encoded again, the outputs cut back to the references), next
    to ``aligned``, its score on the same chunks as they are. None when the delay is 0."""
    delay = options.alignment_delay
    if delay is None:
        delay = pipeline.codec.hop_length // 2 + 1
    if delay == 0:
        return None
    n = min(options.curve_chunks, len(mixtures))
    L = stem_waves.shape[-1]
    delayed = np.concatenate([np.zeros((n, delay), dtype=np.float32), mixtures[:n].astype(np.float32)], axis=1)
    latents = pipeline.codec.encode(torch.from_numpy(delayed)[:, None])  # [n, C, T']
    waves, seconds = _separate_chunks(pipeline.model, pipeline.codec, latents, options.steps, options.seed,
                                      options.batch_size, L + delay, **_settings(pipeline, options),
                                      mixtures=delayed, sample_rate=pipeline.sample_rate)
    waves = [w[:, delay:] for w in waves]  # [K, L] each
    point = _curve_point(waves, seconds, stem_waves[:n], mixtures[:n], pipeline, options, source_names)
    return {"delay_samples": delay, "chunks": n, "aligned": aligned, "delayed": point["si_sdri"]}


def alpha_curve(pipeline, mixture_latents, stem_waves, mixtures, options: EvalOptions,
                source_names: list[str]) -> list[dict]:
    """SI-SDRi (windowed, fixed, original) of ``one_pass`` and ``one_pass_residual`` at each alpha* of
    ``options.alpha_curve`` on the first ``curve_chunks`` chunks: the score along the one-pass path's free
    parameter (a diagnostic: near alpha = 1 the decoder sees the clean mixture and need not separate)."""
    n = min(options.curve_chunks, len(mixture_latents))
    L = stem_waves.shape[-1]
    draws, residual_gain, mask_power, shifts = (_settings(pipeline, options)[key]
                                                for key in ("draws", "residual_gain", "mask_power", "shifts"))
    points = []
    for alpha in options.alpha_curve:
        for mode in ("one_pass", "one_pass_residual"):
            waves, seconds = _separate_chunks(pipeline.model, pipeline.codec, mixture_latents[:n], 1, options.seed,
                                              options.batch_size, L, mode, alpha, draws, mixtures=mixtures[:n],
                                              residual_gain=residual_gain, mask_power=mask_power, shifts=shifts)
            points.append({"alpha": alpha, "mode": mode,
                           **_curve_point(waves, seconds, stem_waves[:n], mixtures[:n], pipeline, options,
                                          source_names)})
    return points


def diagnostics(model, component_waves: list[np.ndarray], stem_waves: np.ndarray, mixture_latents: torch.Tensor,
                source_names: list[str]) -> dict:
    """Whether a decomposition emerged: the component x source SI-SDR matrix (dB, mean over chunks, of the
    evaluated components against the original stems) and the correlation between the component latents z_k.

    ``component_x_source[k][s]``: each row should have one high entry, in a different column per component;
    two rows high in the same column = redundant components. ``z_correlation[k][j]``: Pearson correlation of z_k
    and z_j over all frames and chunks (|r| near 1 = redundant codes)."""
    matrices = np.stack([metrics.score_matrix(w, r) for w, r in zip(component_waves, stem_waves)])  # [N, K, S]
    z = model.encode(mixture_latents.cpu())  # [N, K, Cz, T]
    return {"sources": source_names, "component_x_source": np.nanmean(matrices, axis=0).tolist(),
            "z_correlation": z_correlation(z).tolist()}


def z_correlation(z: torch.Tensor) -> np.ndarray:
    """``z [N, K, Cz, T]`` -> ``[K, K]`` Pearson correlation between the K component latents over all entries."""
    K = z.shape[1]
    flat = z.transpose(0, 1).reshape(K, -1).double().numpy()  # [K, N * Cz * T]
    return np.corrcoef(flat) if K > 1 else np.ones((1, 1))


# ---------------------------------------------------------------------------------------------------------------------
# outputs


def _cell(summary: dict) -> str:
    if summary["n"] == 0 or not np.isfinite(summary["mean"]):
        return "–"
    half = (summary["ci_high"] - summary["ci_low"]) / 2 if np.isfinite(summary["ci_high"]) else float("nan")
    return f"{summary['mean']:.2f} ± {half:.2f}" if np.isfinite(half) else f"{summary['mean']:.2f}"


def markdown_table(report: dict, reference: str = "original", protocol: str = "windowed") -> str:
    """One table: rows = methods (fixed matching for unlabelled ones), columns = metrics per source."""
    sources = report["sources"]
    header = "| method | " + " | ".join(f"{m.upper().replace('_', '-')} {s}" for s in sources
                                         for m in ("si_sdri", "si_sdr", "si_sir", "si_sar")) + " |"
    lines = [header, "|" + "---|" * (1 + 4 * len(sources))]
    methods = list(dict.fromkeys(r["method"] for r in report["results"]))
    for method in methods:
        cells = []
        for source in sources:
            match = [r for r in report["results"] if r["method"] == method and r["source"] == source
                     and r["reference"] == reference and r["protocol"] == protocol
                     and r["matching"] in ("fixed", "labelled")]
            if not match:
                cells.extend(["–"] * 4)
                continue
            cells.extend(_cell(match[0][m]) for m in ("si_sdri", "si_sdr", "si_sir", "si_sar"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_example_vs_fixed(report: dict) -> str:
    sources = report["sources"]
    lines = ["| method | reference | matching | " + " | ".join(f"SI-SDRi {s}" for s in sources) + " |",
             "|" + "---|" * (3 + len(sources))]
    for row_key in sorted({(r["method"], r["reference"], r["matching"]) for r in report["results"]
                           if r["matching"] != "labelled" and r["protocol"] == "windowed"}):
        cells = []
        for source in sources:
            match = [r for r in report["results"] if (r["method"], r["reference"], r["matching"]) == row_key
                     and r["source"] == source and r["protocol"] == "windowed"]
            cells.append(_cell(match[0]["si_sdri"]) if match else "–")
        lines.append("| " + " | ".join(row_key) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict, out: str) -> None:
    storage.write_text(storage.join(out, "report.json"), json.dumps(report, indent=1, default=float))
    parts = [
        f"# Separation report\n",
        f"Model: `{report['model'].get('uri')}` (step {report['model'].get('step')}), K = {report['n_components']}; "
        f"{report['n_chunks']} chunks of {report['chunk_seconds']:.1f} s from `{report['cache']}`; "
        f"{report['options']['steps']} sampler steps, separation mode `{report['separation_mode']}`.\n",
        "Mean ± 95% CI half-width (dB) over evaluation windows. " + report["protocol"]["windows"] + ". "
        + report["protocol"]["matching"] + ". " + report["protocol"]["references"] + ".\n",
        "## Original stems as references (windowed, fixed matching)\n", markdown_table(report, "original"), "",
        "## Codec-reconstructed stems as references (windowed, fixed matching)\n",
        markdown_table(report, "codec"), "",
        "## Whole chunks, original references\n", markdown_table(report, "original", "whole"), "",
        "## Per-example vs fixed matching (windowed)\n", per_example_vs_fixed(report), "",
        f"Fixed assignments (component -> source index): `{json.dumps(report['fixed_assignment'])}`\n",
        "## Speed\n", "| method | real-time factor |", "|---|---|",
        *[f"| {name} | {rtf:.4f} |" for name, rtf in report["rtf"].items()], "",
    ]
    if "steps_curve" in report:
        parts += _curve_table("Sampler steps: real-time factor and SI-SDRi (windowed, fixed, original)",
                              ["steps"], report["steps_curve"], report["sources"])
    if "diagnostics" in report:
        d = report["diagnostics"]
        parts += ["## Decomposition diagnostics\n",
                  "Component x source SI-SDR (dB, mean over chunks; original stems):\n",
                  "| component | " + " | ".join(d["sources"]) + " |", "|" + "---|" * (1 + len(d["sources"]))]
        parts += [f"| {k} | " + " | ".join(f"{v:.2f}" for v in row) + " |"
                  for k, row in enumerate(d["component_x_source"])]
        parts += ["", "Correlation between the component latents z_k:\n",
                  "| | " + " | ".join(f"z{j}" for j in range(len(d["z_correlation"]))) + " |",
                  "|" + "---|" * (1 + len(d["z_correlation"]))]
        parts += [f"| z{k} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
                  for k, row in enumerate(d["z_correlation"])]
        parts.append("")
    if report.get("windows", {}).get("rows"):
        parts += window_section(report)
    if report.get("alignment_check"):
        check = report["alignment_check"]
        parts += [f"## Alignment check: the inputs delayed by {check['delay_samples']} samples\n",
                  f"SI-SDRi (windowed, fixed, original) on the first {check['chunks']} chunks, as they are and "
                  "delayed off the codec's frame grid; a large drop means the model relies on where onsets sit "
                  "in its frames.\n",
                  "| input | " + " | ".join(report["sources"]) + " |", "|" + "---|" * (1 + len(report["sources"]))]
        parts += [f"| {name} | " + " | ".join(f"{check[name][s]:.2f}" for s in report["sources"]) + " |"
                  for name in ("aligned", "delayed")]
        parts.append("")
    if "alpha_curve" in report:
        parts += _curve_table("One-pass alpha*: real-time factor and SI-SDRi (windowed, fixed, original)",
                              ["alpha", "mode"], report["alpha_curve"], report["sources"])
    parts.append(f"Peak resident memory of the evaluation process: {report['peak_memory_mb']:.0f} MB.\n")
    storage.write_text(storage.join(out, "report.md"), "\n".join(parts))


def window_section(report: dict, worst: int = 5) -> list[str]:
    """Markdown lines on the spread of the model's per-window SI-SDRi (fixed matching, original stems): quantiles
    per source, the mean per track (a split's mean can hang on one track), and the ``worst`` windows per source
    with the source's level in the mixture (the mixture's SI-SDR against it, ``si_sdr - si_sdri``)."""
    windows = report["windows"]
    rows, sources = windows["rows"], report["sources"]
    quantiles = (0.1, 0.25, 0.5, 0.75, 0.9)
    lines = [f"## Per window: {windows['method']}, {windows['matching']} matching, {windows['reference']} stems\n",
             "SI-SDRi quantiles (dB) over the scored windows:\n",
             "| source | windows | mean | " + " | ".join(f"q{int(q * 100)}" for q in quantiles) + " |",
             "|" + "---|" * (3 + len(quantiles))]
    for source in sources:
        values = np.array([r["si_sdri"] for r in rows if r["source"] == source])
        if len(values):
            lines.append(f"| {source} | {len(values)} | {values.mean():.2f} | "
                         + " | ".join(f"{v:.2f}" for v in np.quantile(values, quantiles)) + " |")
    tracks = list(dict.fromkeys(r.get("track", "?") for r in rows))
    lines += ["", "Mean SI-SDRi per track (dB; windows in brackets):\n",
              "| track | " + " | ".join(sources) + " |", "|" + "---|" * (1 + len(sources))]
    for track in tracks:
        cells = []
        for source in sources:
            values = [r["si_sdri"] for r in rows if r.get("track", "?") == track and r["source"] == source]
            cells.append(f"{np.mean(values):.2f} ({len(values)})" if values else "–")
        lines.append(f"| {track} | " + " | ".join(cells) + " |")
    lines += ["", f"The {worst} lowest windows per source:\n",
              "| source | track | time in track (s) | SI-SDRi | SI-SIR | SI-SAR | source in mixture (dB) |",
              "|---|---|---|---|---|---|---|"]
    for source in sources:
        ranked = sorted((r for r in rows if r["source"] == source), key=lambda r: r["si_sdri"])[:worst]
        lines += [f"| {source} | {r.get('track', '?')} | {r.get('chunk_start_s', 0.0) + r['start_s']:.1f} | "
                  f"{r['si_sdri']:.2f} | {r['si_sir']:.2f} | {r['si_sar']:.2f} | {r['si_sdr'] - r['si_sdri']:.2f} |"
                  for r in ranked]
    return lines + [""]


def _curve_table(title: str, keys: list[str], points: list[dict], sources: list[str]) -> list[str]:
    """Markdown lines of a curve: one row per point, its ``keys`` columns, the RTF, the SI-SDRi per source."""
    lines = [f"## {title}\n", "| " + " | ".join(keys) + " | RTF | " + " | ".join(f"SI-SDRi {s}" for s in sources)
             + " |", "|" + "---|" * (len(keys) + 1 + len(sources))]
    for point in points:
        lines.append("| " + " | ".join(f"{point[k]:g}" if isinstance(point[k], float) else str(point[k])
                                       for k in keys)
                     + f" | {point['rtf']:.4f} | "
                     + " | ".join(f"{point['si_sdri'].get(s, float('nan')):.2f}" for s in sources) + " |")
    return lines + [""]


def write_examples(out: str, method: MethodOutputs, stem_waves: np.ndarray, mixtures: np.ndarray,
                   sample_rate: int, count: int, source_names: list[str]) -> None:
    """Audio of the first examples and a spectrogram figure of the first one."""
    for i in range(min(count, len(mixtures))):
        folder = storage.join(out, "audio", f"example{i}")
        audio.write(storage.join(folder, "mixture.wav"), mixtures[i][None], sample_rate)
        for k, wave in enumerate(method.waves[i]):
            audio.write(storage.join(folder, f"component{k}.wav"), wave[None], sample_rate)
        for s, name in enumerate(source_names):
            audio.write(storage.join(folder, f"reference_{name}.wav"), stem_waves[i, s][None], sample_rate)
    if len(mixtures):
        storage.write_bytes(storage.join(out, "spectrograms.png"),
                            spectrogram_figure(mixtures[0], method.waves[0], stem_waves[0], sample_rate,
                                               source_names))


def spectrogram_figure(mixture: np.ndarray, components: np.ndarray, references: np.ndarray, sample_rate: int,
                       source_names: list[str]) -> bytes:
    """PNG bytes: the mixture, each component and each reference as log spectrograms."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mixture", mixture)] + [(f"component {k}", c) for k, c in enumerate(components)] + [
        (f"reference: {name}", r) for name, r in zip(source_names, references)]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.0 * len(panels)), sharex=True)
    for axis, (title, wave) in zip(np.atleast_1d(axes), panels):
        axis.specgram(wave + 1e-9, NFFT=1024, Fs=sample_rate, noverlap=768, cmap="magma", scale="dB", vmin=-120)
        axis.set_title(title, fontsize=9, loc="left")
        axis.set_ylabel("Hz")
        axis.set_ylim(0, 8000)
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()
