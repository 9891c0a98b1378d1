"""The ``ucr`` command. Each subcommand imports what it needs when it runs, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ucr.config import CODEC_NAMES, POST_FILTERS, SEPARATION_MODES


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of samples >= 0, got {text!r}")
    return value


def _add_config_args(parser: argparse.ArgumentParser, default_preset: str = "demo") -> None:
    parser.add_argument("--preset", default=default_preset,
                        help=f"shipped preset name or path to a YAML file (default: {default_preset})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.n_components=3 (repeatable)")


def _config_from(args: argparse.Namespace):
    from ucr.config import load_config

    return load_config(args.preset, args.overrides)


# ---------------------------------------------------------------------------------------------------------------------
# handlers


def cmd_config_show(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if args.flat:
        for key, value in config.to_flat_dict().items():
            print(f"{key} = {value!r}")
    else:
        print(config.to_yaml(), end="")
    return 0


def cmd_config_presets(args: argparse.Namespace) -> int:
    from ucr.config import list_presets

    print("\n".join(list_presets()))
    return 0


def cmd_codec_roundtrip(args: argparse.Namespace) -> int:
    from ucr.codec.evaluate import roundtrip
    from ucr.config import CodecConfig

    codec_config = CodecConfig(name=args.codec, weights=args.weights, latent_kind=args.latent_kind,
                               bandwidth=args.bandwidth)
    result = roundtrip(args.input, codec_config, args.out)
    print(f"codec       {result['codec']}")
    print(f"audio       {result['seconds']:.2f} s -> latent [C, T] = {result['latent_shape']}")
    print(f"SI-SDR      {result['si_sdr_db']:.2f} dB (decoded vs input)")
    print(f"encode RTF  {result['encode_rtf']:.4f} (seconds of compute per second of audio)")
    print(f"decode RTF  {result['decode_rtf']:.4f}")
    if args.out:
        print(f"wrote       {args.out}")
    return 0


def cmd_codec_evaluate(args: argparse.Namespace) -> int:
    import json

    from ucr import storage
    from ucr.codec import build_codec
    from ucr.codec.evaluate import codec_table, evaluate_codec, load_excerpts
    from ucr.config import CodecConfig

    names = [name.strip() for name in args.codecs.split(",") if name.strip()]
    unknown = [name for name in names if name not in CODEC_NAMES]
    if unknown or not names:
        raise ValueError(f"--codecs {args.codecs!r}: choose among {', '.join(CODEC_NAMES)}")
    if args.excerpts < 1 or args.seconds <= 0:
        raise ValueError("--excerpts must be at least 1 and --seconds positive")
    rows, excerpts = {}, {}
    for name in names:
        hop = 320 if name == "encodec" else args.hop_length  # EnCodec's framing is fixed
        codec = build_codec(CodecConfig(name=name, weights=args.weights, latent_kind=args.latent_kind,
                                        hop_length=hop))
        if codec.sample_rate not in excerpts:
            excerpts[codec.sample_rate] = load_excerpts(args.data, args.split, tuple(args.sources.split(",")),
                                                        codec.sample_rate, args.excerpts, args.seconds)
        rows[name] = evaluate_codec(codec, excerpts[codec.sample_rate])
        print(f"[codec] {name}: SI-SDR {rows[name]['si_sdr_db']:.2f} dB, composition error "
              f"{rows[name]['composition_error']:.3f}", file=sys.stderr, flush=True)
    table = codec_table(rows)
    print(table)
    if args.out:
        storage.makedirs(args.out)
        storage.write_text(storage.join(args.out, "report.json"), json.dumps(rows, indent=1))
        storage.write_text(storage.join(args.out, "report.md"),
                           f"# Codecs on {args.data} ({args.split}, {args.sources})\n\n{table}\n")
        print(f"[codec] wrote {args.out}/report.json and report.md")
    return 0


def cmd_checkpoint_convert(args: argparse.Namespace) -> int:
    from ucr import checkpoint as ckpt

    ckpt.convert_trusted(args.input, args.out)
    print(f"[checkpoint] {args.input} -> {args.out} (data-only)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ucr.data.synth import render_dataset

    voices = tuple(args.voices.split(",")) if args.voices else None
    summary = render_dataset(args.kind, args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed,
                             soundfont=args.soundfont, voices=voices, progress=not args.quiet)
    splits = summary.get("splits", {})
    print(f"[synth] {summary.get('tracks')} track(s) ({', '.join(f'{k} {v}' for k, v in splits.items())}), "
          f"{summary.get('seconds_of_audio', 0):.0f} s of audio in {summary.get('wall_seconds', 0):.1f} s "
          f"-> {args.out}")
    empty = [split for split, count in splits.items() if count == 0]
    if empty:
        print(f"[synth] note: no track in the {' and '.join(empty)} split(s) ({args.tracks} track(s) split 80/10/10); "
              f"use --tracks 3 or more for a track in every split", file=sys.stderr)
    return 0


def cmd_data_encode(args: argparse.Namespace) -> int:
    from ucr.codec import build_codec
    from ucr.data.latents import encode_split

    overrides = list(args.overrides) + ([f"codec.name={args.codec}"] if args.codec else [])
    from ucr.config import load_config

    config = load_config(args.preset, overrides)
    from ucr.data.latents import EncodeSettings

    settings = EncodeSettings.from_config(config, args.data or config.data.root, args.split, args.with_stems,
                                          args.tracks_per_shard)
    manifest = encode_split(settings, build_codec(config.codec), args.out, progress=not args.quiet)
    print(f"[encode] manifest: {args.out}/manifest.json ({manifest['num_chunks']} chunks)")
    return 0


def _log_hooks(quiet: bool, label: str, tracker=None):
    """With the progress bar off, print one line per log interval (for log files); with a tracker, log there too."""
    from ucr.train.loop import Hooks

    def on_log(step: int, metrics: dict) -> None:
        if quiet:
            print(f"[{label}] step {step} " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
        if tracker is not None:
            tracker.log_step(step, metrics)

    return Hooks(on_log=on_log) if quiet or tracker is not None else Hooks()


def _run_trainer(trainer, args: argparse.Namespace, label: str, tracker=None, stage: str = "train") -> int:
    if not args.no_resume and trainer.resume_if_possible():
        print(f"[{label}] resuming {args.out} from step {trainer.step}")
    result = trainer.fit(resume=False)
    state = "stopped early (train.max_minutes)" if result.stopped_early else "done"
    print(f"[{label}] {state} at step {result.step}; loss {result.metrics.get('loss', float('nan')):.4f}; "
          f"model: {result.final_uri}")
    if tracker is not None:
        tracker.log_training_outcome(args.out, stage)
    return 0


def cmd_codec_train(args: argparse.Namespace) -> int:
    from ucr import storage
    from ucr.codec import train as codec_train
    from ucr.tracking import tracked_stage

    config = _config_from(args)
    with tracked_stage(args.mlflow, "codec", config, args.run_name) as tracker:
        trainer = codec_train.build_codec_trainer(config, args.data, args.out, progress=not args.quiet,
                                                  hooks=_log_hooks(args.quiet, "codec", tracker))
        _run_trainer(trainer, args, "codec", tracker, "codec")
    folder = storage.join(args.out, codec_train.RUN_EXPORT_FOLDER)
    codec_train.export_pretrained(storage.join(args.out, "final.pt"), folder)
    print(f"[codec] weights: {folder}  (use: --set codec.name=encodec --set codec.weights={folder} "
          f"--set codec.latent_kind=continuous)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ucr.tracking import tracked_stage
    from ucr.train.tasks import build_decomposer_trainer

    config = _config_from(args)
    stage = "train-supervised" if args.supervised else "train"
    with tracked_stage(args.mlflow, stage, config, args.run_name) as tracker:
        trainer = build_decomposer_trainer(config, args.data or config.data.cache, args.out,
                                           supervised=args.supervised, progress=not args.quiet,
                                           hooks=_log_hooks(args.quiet, "train", tracker))
        return _run_trainer(trainer, args, "train", tracker, stage)


def cmd_train_prior(args: argparse.Namespace) -> int:
    from ucr.tracking import tracked_stage
    from ucr.train.tasks import build_prior_trainer

    config = _config_from(args)
    with tracked_stage(args.mlflow, "prior", config, args.run_name) as tracker:
        trainer = build_prior_trainer(config, args.decomposer, args.data or config.data.cache, args.out,
                                      progress=not args.quiet, hooks=_log_hooks(args.quiet, "train-prior", tracker))
        return _run_trainer(trainer, args, "train-prior", tracker, "prior")


SHIFTS_HELP = ("the shift trick: separate N times, the input delayed by multiples of hop / N samples, and average "
               "(N x the decoder passes; default: the model's diffusion.shifts)")
ALPHA_HELP = ("one-pass modes: the blend level alpha* at which the mixture is noised before the decoder reads it "
              "(default: the model's diffusion.one_pass_alpha; the best value grows with training, "
              "docs/results/research AA1)")
DEVICE_HELP = "auto (the default: CUDA when present, else CPU), cpu, cuda or cuda:N"


def _pipeline(reference: str | None, device: str, label: str):
    """Load the model ``reference`` names (or the one found by the default search, see ``ucr.models``) on
    ``device``, and say which model it is."""
    from ucr.pipeline import Pipeline

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device auto or cpu")
    pipeline = Pipeline.from_pretrained(reference, device=device)
    print(f"[{label}] model {pipeline.metadata['name']} ({pipeline.metadata['found_by']}; "
          f"K = {pipeline.n_components} on {pipeline.device})")
    return pipeline


def _write_outputs(out: str, prefix: str, result: dict, names: Sequence[str]) -> None:
    from ucr import audio, storage

    for b, mixture in enumerate(result["mixture"]):
        name = f"{prefix}{b}" if len(result["mixture"]) > 1 else prefix
        audio.write(storage.join(out, f"{name}_mixture.wav"), mixture[None], result["sample_rate"])
        for component_name, component in zip(names, result["components"][b]):
            audio.write(storage.join(out, f"{name}_{component_name}.wav"), component[None], result["sample_rate"])
        print(f"[{prefix}] {storage.join(out, name)}_mixture.wav (+ {len(result['components'][b])} components)")


def cmd_generate(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args.model, args.device, "generate")
    result = pipeline.generate(n=args.n, seconds=args.seconds, seed=args.seed, steps=args.steps,
                               progress=not args.quiet)
    _write_outputs(args.out, "generated", result, pipeline.component_names)
    return 0


def cmd_vary(args: argparse.Namespace) -> int:
    from ucr import audio

    pipeline = _pipeline(args.model, args.device, "vary")
    wave, rate = audio.read(args.input, mono=False)
    result = pipeline.vary(wave, rate, keep=args.keep, seed=args.seed, steps=args.steps, n=args.n,
                           progress=not args.quiet)
    _write_outputs(args.out, "variation", result, pipeline.component_names)
    return 0


def cmd_recompose(args: argparse.Namespace) -> int:
    from ucr import audio

    labels = [chr(ord("A") + i) for i in range(len(args.inputs))]
    take = {}
    for spec in args.take:
        component, _, label = spec.partition(":")
        if not component.isdigit() or label not in labels:
            raise ValueError(f"--take {spec!r} must look like COMPONENT:INPUT with INPUT in {labels}, e.g. 0:A")
        take[int(component)] = labels.index(label)
    pipeline = _pipeline(args.model, args.device, "recompose")
    waves = [audio.read(uri, mono=False) for uri in args.inputs]
    result = pipeline.recompose(waves, take, seed=args.seed, steps=args.steps, progress=not args.quiet)
    _write_outputs(args.out, "recomposed", result, pipeline.component_names)
    return 0


MIXTURE_FILES = ("mix", "mixture")  # the mixture's file name in the Slakh and MUSDB layouts


def track_name(uri: str) -> str:
    """The folder a track's outputs go to: ``music/Song 1.flac`` -> ``Song 1``; in the dataset layouts, where every
    mixture has the same file name, the track's folder (``data/test/Track00030/mix.flac`` -> ``Track00030``)."""
    parts = [part for part in str(uri).replace("\\", "/").split("/") if part]
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1].lstrip(".") else parts[-1]
    return parts[-2] if stem.lower() in MIXTURE_FILES and len(parts) >= 2 else stem


def cmd_separate(args: argparse.Namespace) -> int:
    import numpy as np

    from ucr import audio, storage

    format = "MP3" if args.mp3 else "FLAC" if args.flac else "WAV"
    audio.output_subtype(format, args.sample_format)  # refuse an impossible format before any work
    if format == "MP3" and args.sr and args.sr not in audio.MP3_SAMPLE_RATES:
        raise ValueError(f"--mp3 cannot store {args.sr} Hz; choose --sr among {audio.MP3_SAMPLE_RATES}")
    names = [track_name(track) for track in args.inputs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"several inputs would write to the same folder ({', '.join(clashes)}); rename them or "
                         f"separate them in separate runs")
    pipeline = _pipeline(args.model, args.device, "separate")
    folder = storage.join(args.out, pipeline.metadata["name"])
    for track in args.inputs:
        wave, rate = audio.read(track, mono=False)  # [channels, L]
        out_rate = args.sr or rate
        if format == "MP3" and out_rate not in audio.MP3_SAMPLE_RATES:
            raise ValueError(f"{track}: MP3 cannot store its rate, {out_rate} Hz; add --sr 48000 (or another of "
                             f"{audio.MP3_SAMPLE_RATES})")
        result = pipeline.separate(wave, rate, steps=args.steps, seed=args.seed, mode=args.mode,
                                   post_filter=args.post_filter, progress=not args.quiet, shifts=args.shifts,
                                   alpha=args.alpha)
        length = int(round(wave.shape[1] * out_rate / rate))
        components = audio.fit_length(audio.resample(result.components, result.sample_rate, out_rate), length)
        peak = float(np.abs(components).max())
        if peak > 1.0 and (format != "WAV" or args.sample_format not in (None, "float32")):
            print(f"[separate] {track}: components peak at {peak:.2f} (over full scale) and are clipped in "
                  f"{format}; --float32 WAV keeps them whole", file=sys.stderr)
        target = storage.join(folder, track_name(track))
        for name, component in zip(result.names, components):  # [L] each
            channels = np.repeat(component[None], wave.shape[0], axis=0)  # [channels, L]: the model is mono
            audio.write(storage.join(target, f"{name}.{format.lower()}"), channels, out_rate, args.sample_format)
        print(f"[separate] {track} -> {target}/ ({', '.join(result.names)}; {out_rate} Hz, {wave.shape[0]} ch)")
    return 0


def _add_run_args(parser: argparse.ArgumentParser, out_help: str | None) -> None:
    """What every training command takes: --out (unless the caller declared it), --no-resume, --quiet, the config
    (--preset, --set) and tracking (--mlflow, --run-name)."""
    if out_help is not None:
        parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(parser)
    _add_tracking_args(parser)


def _add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mlflow", action="store_true",
                        help="track this run in MLflow as the Ray jobs do (on by default when MLFLOW_TRACKING_URI "
                             "is set; without it, the local store ~/.ucr/mlflow.db)")
    parser.add_argument("--run-name", help="MLflow parent run this stage belongs to (default: the preset's name)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ucr.data.latents import resolve_cache
    from ucr.evaluate import EvalOptions, component_sources, evaluate, store_component_sources

    pipeline = _pipeline(args.model, args.device, "evaluate")
    if args.label_components and pipeline.metadata.get("downloaded"):
        raise ValueError("--label-components writes the names into the checkpoint file, and this model was "
                         "downloaded from the registry (where the evaluate job names it); pass --model a checkpoint "
                         "or run folder")
    supervised = _pipeline(args.supervised, args.device, "evaluate") if args.supervised else None
    curve = tuple(int(v) for v in args.steps_curve.split(",")) if args.steps_curve else ()
    options = EvalOptions(steps=args.steps, seed=args.seed, max_chunks=args.max_chunks, nmf=not args.no_nmf,
                          steps_curve=curve, mode=args.mode, alpha=args.alpha, draws=args.draws,
                          residual_gain=args.residual_gain, mask_power=args.mask_power, shifts=args.shifts,
                          post_filter=args.post_filter,
                          curve_chunks=args.curve_chunks, alignment_delay=args.alignment_delay,
                          alpha_curve=tuple(float(v) for v in args.alpha_curve.split(",")) if args.alpha_curve
                          else ())
    cache = resolve_cache(args.data, args.split)
    from ucr.evaluate import markdown_table
    from ucr.tracking import tracked_stage

    with tracked_stage(args.mlflow, "evaluate", pipeline.config, args.run_name) as tracker:
        report = evaluate(pipeline, cache, args.out, options, supervised=supervised, progress=not args.quiet)
        if tracker is not None:
            tracker.log_report(report, args.split, args.out)
    print(markdown_table(report))
    if args.label_components:
        sources = component_sources(report)
        written = store_component_sources(pipeline.metadata["uri"], sources)
        print(f"[evaluate] components named {sources} (fixed matching on {args.split}) in {written}")
    if args.generation:
        from ucr.generation import evaluate_generation, generation_markdown

        generation = evaluate_generation(pipeline, cache, args.out, n=args.generate_n, steps=args.steps,
                                         seed=args.seed)
        print(generation_markdown(generation))
    return 0


JOB_STAGES = ("pipeline", "data", "encode", "train", "prior", "register", "evaluate")


def run_job(stage: str, job_args: Sequence[str]) -> int:
    """Run ``python -m jobs.<stage>`` (Ray and MLflow live there; this package never imports them). With no
    ``--address`` and no ``$RAY_ADDRESS`` the job starts an embedded local Ray."""
    import subprocess

    import os

    if stage not in JOB_STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {list(JOB_STAGES)}")
    env = {**os.environ, "UCR_PROG": f"ucr run {stage}"}  # usage lines name the command the user typed
    return subprocess.call([sys.executable, "-m", f"jobs.{stage}", *job_args], env=env)


def cmd_run(args: argparse.Namespace) -> int:
    return run_job(args.stage, args.job_args)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``python -m tune.sweep ARGS...`` (Ray Tune lives there)."""
    import os
    import subprocess

    env = {**os.environ, "UCR_PROG": "ucr sweep"}
    return subprocess.call([sys.executable, "-m", "tune.sweep", *args.sweep_args], env=env)


DEMO_LOG = "demo.log"  # inside the demo's folder: every log line; the console keeps headings, bars, results


def cmd_demo(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{os.path.abspath(args.out)}/mlflow.db")
    os.makedirs(args.out, exist_ok=True)
    job_args = ["--preset", args.preset, "--out", args.out, "--workers", "2", "--supervised",
                "--steps-curve", "5", "10", "25", "--log-file", os.path.join(args.out, DEMO_LOG),
                *sum((["--set", o] for o in args.overrides), [])]
    return run_job("pipeline", job_args)


# ---------------------------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ucr", description="Unsupervised composable audio representations: "
                                     "learn K components from mixtures, separate, generate, vary.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="run a Ray job stage in-process on an embedded local Ray (or --address)",
                              description="Runs `python -m jobs.STAGE ARGS...`; see `ucr run STAGE --help`.")
    run.add_argument("stage", choices=list(JOB_STAGES))
    run.add_argument("job_args", nargs=argparse.REMAINDER, help="arguments for the stage (e.g. --preset demo)")
    run.set_defaults(handler=cmd_run)

    sweep = commands.add_parser("sweep", add_help=False,
                                help="a hyperparameter sweep (Ray Tune + Optuna + ASHA); see `ucr sweep --help`",
                                description="Runs `python -m tune.sweep ARGS...`.")
    sweep.add_argument("sweep_args", nargs=argparse.REMAINDER,
                       help="arguments for tune.sweep (e.g. --space tune/spaces/demo.yaml --trials 8)")
    sweep.set_defaults(handler=cmd_sweep)

    demo = commands.add_parser("demo", help="the end-to-end experiment on the demo preset (what `make demo` runs); "
                               "the full log goes to OUT/demo.log")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    _add_config_args(demo)
    demo.set_defaults(handler=cmd_demo)

    config = commands.add_parser("config", help="inspect configurations and presets")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_commands.required = True
    show = config_commands.add_parser("show", help="print the resolved configuration")
    _add_config_args(show)
    show.add_argument("--flat", action="store_true", help="print section.field = value lines")
    show.set_defaults(handler=cmd_config_show)
    presets = config_commands.add_parser("presets", help="list shipped presets")
    presets.set_defaults(handler=cmd_config_presets)

    codec = commands.add_parser("codec", help="codec utilities")
    codec_commands = codec.add_subparsers(dest="codec_command", metavar="ACTION")
    codec_commands.required = True
    rt = codec_commands.add_parser("roundtrip", help="encode + decode a file; print SI-SDR and real-time factors")
    rt.add_argument("input", metavar="IN", help="audio file (wav, flac, ogg, ...; local path or s3:// URI)")
    rt.add_argument("--codec", choices=list(CODEC_NAMES), default="mdct")
    rt.add_argument("--weights", default="facebook/encodec_24khz",
                    help="EnCodec weights: hub id, folder, s3:// URI, or 'random' (timing only)")
    rt.add_argument("--latent-kind", choices=["quantized", "continuous"], default="quantized")
    rt.add_argument("--bandwidth", type=float, default=24.0, help="EnCodec kbps for quantized latents")
    rt.add_argument("--out", metavar="OUT", help="write the decoded audio here")
    rt.set_defaults(handler=cmd_codec_roundtrip)
    ev = codec_commands.add_parser(
        "evaluate", help="one table for every codec: reconstruction, multi-resolution STFT and mel distances, "
                         "real-time factors, composition error",
        description="Evaluate codecs side by side on excerpts of a dataset split with stems (the mixture is their "
                    "mean, as in training). Writes report.json and report.md to --out.")
    ev.add_argument("--data", required=True, help="dataset root with stems (Slakh layout), local or s3://")
    ev.add_argument("--split", default="validation", help="split to take excerpts from (default: validation)")
    ev.add_argument("--sources", default="Drums,Bass", help="stems, comma-separated (default: Drums,Bass)")
    ev.add_argument("--codecs", default="mdct,stft_mag,stft_if",
                    help=f"comma-separated, among {', '.join(CODEC_NAMES)} (default: mdct,stft_mag,stft_if)")
    ev.add_argument("--weights", default="facebook/encodec_24khz", help="EnCodec weights, for --codecs encodec")
    ev.add_argument("--latent-kind", choices=["quantized", "continuous"], default="quantized",
                    help="EnCodec latent (default quantized, the paper); a codec from `ucr codec train` is "
                         "continuous")
    ev.add_argument("--excerpts", type=int, default=16, help="one excerpt per track, this many tracks (default 16)")
    ev.add_argument("--seconds", type=float, default=4.0, help="excerpt length (default 4)")
    ev.add_argument("--hop-length", type=int, default=320,
                    help="samples per latent frame of the analytic codecs (mdct, stft_mag, stft_if; default 320 = "
                         "EnCodec's 75 Hz; the demo and cpu presets use 640); EnCodec stays at 320")
    ev.add_argument("--out", help="folder for report.json and report.md")
    ev.set_defaults(handler=cmd_codec_evaluate)

    ct = codec_commands.add_parser(
        "train", help="train a small EnCodec on a dataset's mixtures (resumes an existing run)",
        description="Train transformers' EncodecModel (codec.train_* sizes; 24 kHz mono, 75 Hz, continuous latents) "
                    "on excerpts of the train split's mixtures with the project's loop (train.*: steps, lr, "
                    "batch, EMA, checkpoints, exact resume). Writes checkpoints and final.pt to --out and the "
                    "weights as a save_pretrained folder, OUT/encodec, for codec.weights.")
    ct.add_argument("--data", required=True, help="audio dataset root (Slakh layout; data.sources are mixed)")
    _add_run_args(ct, "run folder (local or s3://): checkpoints, final.pt and encodec/")
    ct.set_defaults(handler=cmd_codec_train)

    device_note = ("Runs on train.device: auto by default (CUDA when present, else CPU); --set train.device=cpu "
                   "forces the CPU.")
    train = commands.add_parser("train", help="train the decomposer in-process (resumes an existing run)",
                                description="Train the decomposer in-process (resumes an existing run). " + device_note)
    train.add_argument("--data", help="latent cache URI of the training split (default: data.cache of the preset)")
    train.add_argument("--out", required=True, help="run folder (local or s3://): checkpoints and final.pt")
    train.add_argument("--supervised", action="store_true",
                       help="train the supervised reference (each source's latent is its component's target; "
                            "needs a cache encoded --with-stems)")
    _add_run_args(train, None)
    train.set_defaults(handler=cmd_train)

    prior = commands.add_parser("train-prior", help="train the masked prior over a trained decomposer's components",
                                description="Train the masked prior over a trained decomposer's components. "
                                            + device_note)
    prior.add_argument("--decomposer", required=True, help="decomposer checkpoint file or run folder")
    prior.add_argument("--data", help="latent cache of the training split (default: data.cache of the preset)")
    prior.add_argument("--out", required=True, help="run folder for the prior (its final.pt embeds the decomposer)")
    _add_run_args(prior, None)
    prior.set_defaults(handler=cmd_train_prior)

    model_help = ("checkpoint file, run folder, experiment folder (demo_out), s3:// URI, models:/NAME@ALIAS or "
                  "models:/NAME/VERSION (default: $UCR_MODEL, else the registry's champion when "
                  "MLFLOW_TRACKING_URI is set, else the last `make demo` model)")

    def model_args(sub: argparse.ArgumentParser, out: str, needs: str = "a prior checkpoint (`ucr train-prior`)"
                   ) -> None:
        sub.add_argument("--model", help=f"{needs}: {model_help}")
        sub.add_argument("--out", default=out, help=f"output folder (default: {out})")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--steps", type=int, help="sampler steps (default: diffusion.sampler_steps of the model)")
        sub.add_argument("--device", default="auto", help=DEVICE_HELP)
        sub.add_argument("--quiet", action="store_true", help="no progress bar")

    generate = commands.add_parser("generate", help="generate music unconditionally with the prior")
    generate.add_argument("--n", type=int, default=1, help="number of excerpts")
    generate.add_argument("--seconds", type=float, default=5.0)
    model_args(generate, "generated")
    generate.set_defaults(handler=cmd_generate)

    vary = commands.add_parser("vary", help="keep some components of a mixture, regenerate the others")
    vary.add_argument("input", metavar="IN", help="audio file")
    vary.add_argument("--keep", type=int, action="append", required=True, help="component to keep (repeatable)")
    vary.add_argument("--n", type=int, default=1, help="number of variations")
    model_args(vary, "variations")
    vary.set_defaults(handler=cmd_vary)

    recompose = commands.add_parser(
        "recompose", help="swap components between mixtures (A.wav B.wav ...); needs no prior",
        description="Swap components between mixtures: component K of the output comes from input INPUT. The "
                    "decoder renders the chosen components, so a decomposer checkpoint is enough (no prior needed).")
    recompose.add_argument("inputs", nargs="+", metavar="IN", help="audio files, labelled A, B, ... in order")
    recompose.add_argument("--take", action="append", required=True, metavar="K:INPUT",
                           help="component K from input INPUT, e.g. --take 0:A --take 1:B")
    model_args(recompose, "recomposed", needs="a decomposer or prior checkpoint (no prior needed)")
    recompose.set_defaults(handler=cmd_recompose)

    separate = commands.add_parser(
        "separate", help="separate audio files into their K components",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Separate audio files into the model's K components, like `demucs song.mp3`:\n\n"
                    "    ucr separate song.wav                 # -> separated/<model>/song/<name>.wav\n"
                    "    ucr separate a.wav b.flac -n runs/cpu60 --flac --int16\n\n"
                    "<name> is the source a component stands for when the model knows it (a supervised model, or one\n"
                    "the evaluate job named on validation), else component0, component1, ... Outputs keep the\n"
                    "input's sample rate and channel count (the model separates the mono downmix; each channel\n"
                    "of a stereo output holds the same component).")
    separate.add_argument("inputs", nargs="+", metavar="IN",
                          help="audio files (wav, flac, ogg, mp3, ...; any rate, mono or stereo; local or s3://)")
    separate.add_argument("-n", "--model", help=model_help)
    separate.add_argument("-o", "--out", default="separated",
                          help="output folder (default: separated): OUT/<model>/<track>/<name>.wav")
    container = separate.add_mutually_exclusive_group()
    container.add_argument("--flac", action="store_true", help="write FLAC instead of WAV")
    container.add_argument("--mp3", action="store_true", help="write MP3 (where libsndfile can encode it)")
    depth = separate.add_mutually_exclusive_group()
    for sample_format, what in (("int16", "16-bit integers"), ("int24", "24-bit integers (the FLAC default)"),
                                ("float32", "32-bit floats (the WAV default)")):
        depth.add_argument(f"--{sample_format}", dest="sample_format", action="store_const", const=sample_format,
                           help=f"samples as {what}")
    separate.add_argument("--sr", type=int, metavar="HZ", help="output sample rate (default: the input's)")
    separate.add_argument("--steps", type=int, help="sampler steps (default: diffusion.sampler_steps of the model)")
    separate.add_argument("--seed", type=int, default=0)
    separate.add_argument("--mode", choices=list(SEPARATION_MODES),
                          help="independent (the paper), mixture_consistent, one_pass or one_pass_residual "
                               "(default: the model's diffusion.separation)")
    separate.add_argument("--alpha", type=float, help=ALPHA_HELP)
    separate.add_argument("--shifts", type=int, help=SHIFTS_HELP)
    separate.add_argument("--post-filter", choices=list(POST_FILTERS),
                          help="waveform post-filter: none, or wiener (soft masks of the decoded components on "
                               "the mixture's STFT); default: the model's diffusion.post_filter")
    separate.add_argument("--device", default="auto", help=DEVICE_HELP)
    separate.add_argument("--quiet", action="store_true", help="no progress bar")
    separate.set_defaults(handler=cmd_separate)

    evaluate = commands.add_parser("evaluate", help="separation report: the model against baselines")
    evaluate.add_argument("--model", help=model_help)
    evaluate.add_argument("--data", required=True, help="latent cache URI (the split's cache, or a folder of splits)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--out", required=True, help="report folder (local or s3://)")
    evaluate.add_argument("--supervised", help="checkpoint of the supervised reference, to add to the table")
    evaluate.add_argument("--label-components", action="store_true",
                          help="write the fixed component -> source matching found here into the model's checkpoint, "
                               "so `ucr separate` names its files by source (use the validation split)")
    evaluate.add_argument("--steps", type=int, default=50)
    evaluate.add_argument("--steps-curve", help="comma-separated step counts for the speed/quality curve, "
                                                "e.g. 5,10,25,50")
    evaluate.add_argument("--max-chunks", type=int, help="evaluate only the first N chunks")
    evaluate.add_argument("--mode", choices=list(SEPARATION_MODES),
                          help="separation mode (default: diffusion.separation of the model)")
    evaluate.add_argument("--alpha", type=float, help=ALPHA_HELP)
    evaluate.add_argument("--draws", type=int, help="one-pass noise draws, in antithetic pairs (default: diffusion.one_pass_draws)")
    evaluate.add_argument("--residual-gain", choices=["least_squares", "unit"],
                          help="one_pass_residual: fit the kept components' gains to the mixture, or keep them as "
                               "decoded (default: diffusion.residual_gain)")
    evaluate.add_argument("--mask-power", type=float,
                          help="codecs that decode separations as masks on the mixture (stft_mag): the power of the "
                               "component magnitudes in the masks, 1 = magnitude ratio, 2 = power ratio (default: "
                               "diffusion.mask_power)")
    evaluate.add_argument("--shifts", type=int, help=SHIFTS_HELP)
    evaluate.add_argument("--post-filter", choices=list(POST_FILTERS),
                          help="waveform post-filter: none, or wiener (soft masks of the decoded components on "
                               "the mixture's STFT); default: the model's diffusion.post_filter")
    evaluate.add_argument("--alpha-curve", help="comma-separated alpha* values at which to also score the one-pass "
                                                "modes, e.g. 0.1,0.3,0.6")
    evaluate.add_argument("--curve-chunks", type=int, default=16,
                          help="chunks used by the --steps-curve and --alpha-curve points and the alignment check "
                               "(default: 16)")
    evaluate.add_argument("--alignment-delay", type=_non_negative_int, default=None, metavar="SAMPLES",
                          help="alignment check: also score the model on the inputs delayed by this many samples "
                               "(default: half the codec's hop + 1; 0: skip)")
    evaluate.add_argument("--generation", action="store_true",
                          help="also the generation metrics (needs a prior checkpoint as --model)")
    evaluate.add_argument("--generate-n", type=int, default=8, help="excerpts to generate for those metrics")
    evaluate.add_argument("--no-nmf", action="store_true", help="skip the NMF baseline")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_tracking_args(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    checkpoint = commands.add_parser("checkpoint", help="checkpoint utilities")
    checkpoint_commands = checkpoint.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    checkpoint_commands.required = True
    convert = checkpoint_commands.add_parser(
        "convert", help="rewrite a checkpoint of the earlier pickled format as data only. Loading the input "
                        "unpickles it, which can run code: only convert files you trust")
    convert.add_argument("input", metavar="IN", help="old checkpoint file or run folder (local or s3://)")
    convert.add_argument("out", metavar="OUT", help="where to write the data-only checkpoint (a .pt path)")
    convert.set_defaults(handler=cmd_checkpoint_convert)

    data = commands.add_parser("data", help="synthetic data and the latent cache")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_commands.required = True
    synth = data_commands.add_parser("synth", help="render a Slakh-layout synthetic dataset through a GM soundfont")
    synth.add_argument("--kind", choices=["drums_bass", "chorales"], default="drums_bass")
    synth.add_argument("--tracks", type=int, default=20,
                       help="number of tracks, split 80/10/10 into train/validation/test; from 3 on every split gets "
                            "at least one (default: 20)")
    synth.add_argument("--seconds", type=float, default=30.0, help="length of each track")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--soundfont", help="a .sf2 file (default: the GM soundfont shipped with pretty_midi)")
    synth.add_argument("--voices", help="chorales: comma-separated voices, e.g. soprano,bass")
    synth.add_argument("--out", required=True, help="output folder or s3:// URI")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=cmd_data_synth)
    encode = data_commands.add_parser("encode", help="encode a split into a resumable latent cache")
    encode.add_argument("--data", help="dataset root (folder or s3://); default: data.root of the preset")
    encode.add_argument("--split", default="train")
    encode.add_argument("--codec", choices=["encodec", "mdct"], help="overrides codec.name of the preset")
    encode.add_argument("--out", required=True, help="cache folder or s3:// URI")
    encode.add_argument("--with-stems", dest="with_stems", action="store_true", default=None,
                        help="also store stem latents and reference waveforms (default: on except for train)")
    encode.add_argument("--no-stems", dest="with_stems", action="store_false")
    encode.add_argument("--tracks-per-shard", type=int, default=None,
                        help="tracks per cache shard (default: data.tracks_per_shard of the preset, as the jobs use)")
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(encode)
    encode.set_defaults(handler=cmd_data_encode)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sweep"]:  # everything after `sweep` belongs to tune.sweep (argparse would take its options)
        return cmd_sweep(argparse.Namespace(sweep_args=argv[1:]))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ValueError as err:  # boundary errors: bad config, files, weights, input — the message says what to change
        print(f"ucr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
