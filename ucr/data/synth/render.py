"""Synthesis: the General MIDI soundfont, MIDI -> audio with FluidSynth, and :func:`render_track` (one track's
stems, mix and MIDI from its :class:`~ucr.data.synth.plan.TrackPlan`: a pure function, so workers can render
tracks in parallel)."""

from __future__ import annotations

import io
import math
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ucr import audio, storage
from ucr.data.synth.compose import compose_chorale, compose_drums_bass
from ucr.data.synth.plan import (MIX_PEAK, STEM_RMS_DB, RenderedTrack, Stem, TrackPlan, check_kind, check_pool,
                                 check_sample_rate, check_seconds, check_voices)


# ----------------------------------------------------------------------------------------------------------------------
# The soundfont


def default_soundfont() -> str:
    """Path of the General MIDI soundfont shipped inside the ``pretty_midi`` package (``TimGM6mb.sf2``)."""
    import pretty_midi

    path = Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise ValueError(f"soundfont: pretty_midi ships no TimGM6mb.sf2 at {path}; pass soundfont=/path/to/file.sf2")
    return str(path)


def resolve_soundfont(soundfont: str | None) -> str:
    """``None`` -> :func:`default_soundfont`; otherwise check that the local ``.sf2`` file exists."""
    if soundfont is None:
        return default_soundfont()
    soundfont = str(soundfont)
    if storage.is_remote(soundfont):
        raise ValueError(f"soundfont: must be a local .sf2 file (FluidSynth reads from disk), got {soundfont!r}")
    if not Path(soundfont).expanduser().is_file():
        raise ValueError(f"soundfont: no such file {soundfont!r}; pass an existing .sf2 file or None for the "
                         f"default ({default_soundfont()})")
    return str(Path(soundfont).expanduser().resolve())




# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def _instrument(stem: Stem, seconds: float):
    """A pretty_midi Instrument holding the stem's notes, cut at ``seconds``."""
    import pretty_midi

    instrument = pretty_midi.Instrument(program=stem.program, is_drum=stem.is_drum, name=stem.name)
    for start, end, pitch, velocity in sorted(stem.notes):
        if start >= seconds:
            continue
        end = min(end, seconds)
        if end - start < 1e-3:
            continue
        instrument.notes.append(pretty_midi.Note(velocity=int(velocity), pitch=int(pitch), start=float(start),
                                                 end=float(end)))
    return instrument


def _synthesize(instrument, sample_rate: int, soundfont: str, length: int) -> np.ndarray:
    """Render one instrument with a fresh FluidSynth instance -> float32 ``[length]`` in [-1, 1] units."""
    if not instrument.notes:
        return np.zeros(length, dtype=np.float32)
    try:
        import fluidsynth
    except ImportError as err:
        raise RuntimeError("rendering needs the FluidSynth library: install libfluidsynth3 (Debian/Ubuntu) or "
                           f"fluid-synth (Homebrew) and pyfluidsynth ({err})") from None
    synth = fluidsynth.Synth(samplerate=float(sample_rate))
    try:
        sfid = synth.sfload(soundfont)
        if sfid < 0:
            raise ValueError(f"soundfont: FluidSynth could not load {soundfont!r}")
        wave = instrument.fluidsynth(fs=sample_rate, synthesizer=synth, sfid=sfid)
    finally:
        synth.delete()
    # pretty_midi returns the left channel of FluidSynth's 16-bit output as float64 in int16 units
    wave = np.asarray(wave, dtype=np.float64) / 32768.0
    return audio.fit_length(wave, length).astype(np.float32)


def _midi_bytes(instruments: Iterable, tempo: float) -> bytes:
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=float(tempo))
    midi.instruments.extend(instruments)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def _program_name(program: int, is_drum: bool) -> str:
    import pretty_midi

    return "Drums" if is_drum else pretty_midi.program_to_instrument_name(int(program))


def render_track(kind: str, plan: TrackPlan, seconds: float, sample_rate: int = 24000,
                 soundfont: str | None = None, voices: Sequence[str] | None = None,
                 instrument_pool: Mapping[str, Sequence[int]] | None = None) -> RenderedTrack:
    """Compose and render one track; a pure function of its arguments (same plan -> identical samples).

    Every stem and the mixture are float32 ``[round(seconds * sample_rate)]``. Each stem is brought to an RMS drawn
    in ``STEM_RMS_DB`` and then all stems are scaled together so the mix peaks at most ``MIX_PEAK``.
    """
    check_kind(kind)
    seconds = check_seconds(seconds)
    sample_rate = check_sample_rate(sample_rate)
    chosen_voices = check_voices(kind, voices)
    pool = check_pool(kind, instrument_pool)
    sf2 = resolve_soundfont(soundfont)
    length = int(round(seconds * sample_rate))

    rng = np.random.default_rng(plan.track_seed)
    skipped: list[dict] = []
    if kind == "drums_bass":
        specs, info = compose_drums_bass(rng, seconds, pool)
    else:
        specs, info, skipped = compose_chorale(rng, seconds, chosen_voices, pool)

    gain_rng = np.random.default_rng([plan.track_seed, 1])
    instruments, waves, gains = [], [], []
    for spec in specs:
        instrument = _instrument(spec, seconds)
        wave = _synthesize(instrument, sample_rate, sf2, length)
        level = audio.rms(wave)
        target = 10 ** (gain_rng.uniform(*STEM_RMS_DB) / 20)
        gain = target / level if level > 1e-9 else 0.0
        instruments.append(instrument)
        waves.append(wave.astype(np.float64) * gain)
        gains.append(gain)
    mix = np.sum(waves, axis=0) if waves else np.zeros(length)
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    overall = min(1.0, MIX_PEAK / peak) if peak > 0 else 1.0
    waves = [(w * overall).astype(np.float32) for w in waves]
    mixture = np.sum(np.stack(waves), axis=0, dtype=np.float32) if waves else np.zeros(length, np.float32)

    tempo = info["tempo"]
    plugin = Path(sf2).name
    stems, midi = [], {}
    for i, (spec, instrument, wave, gain) in enumerate(zip(specs, instruments, waves, gains)):
        stem_id = f"S{i:02d}"
        level_db = audio.rms_db(wave)
        meta = {
            "inst_class": spec.inst_class,
            "program_num": int(spec.program),
            "is_drum": bool(spec.is_drum),
            "audio_rendered": True,
            "midi_saved": True,
            "midi_program_name": _program_name(spec.program, spec.is_drum),
            "plugin_name": plugin,
            "name": spec.name,
            "notes": len(instrument.notes),
            "rms_db": round(level_db, 2) if math.isfinite(level_db) else None,
            "gain": round(float(gain * overall), 6),
        }
        stems.append((stem_id, wave, meta))
        midi[stem_id] = _midi_bytes([instrument], tempo)
    all_src = _midi_bytes(instruments, tempo)

    metadata = {
        "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ucr-synth/{kind}/{plan.seed}/{plan.index}")),
        "audio_dir": "stems",
        "midi_dir": "MIDI",
        "normalized": True,
        "normalization_factor": round(float(np.mean(STEM_RMS_DB)), 2),
        "overall_gain": round(float(overall), 6),
        "target_peak": MIX_PEAK,
        "sample_rate": sample_rate,
        "ucr_synth": {
            "kind": kind,
            "seed": int(plan.seed),
            "track_seed": int(plan.track_seed),
            "index": int(plan.index),
            "split": plan.split,
            "seconds": seconds,
            "sample_rate": sample_rate,
            "tempo": float(tempo),
            "soundfont": plugin,
            **{k: v for k, v in info.items() if k != "tempo"},
        },
        "stems": {stem_id: meta for stem_id, _, meta in stems},
    }
    if skipped:
        metadata["ucr_synth"]["skipped_sources"] = [dict(s) for s in skipped]
    return RenderedTrack(stems=stems, midi=midi, all_src_midi=all_src, mixture=mixture, metadata=metadata,
                         sample_rate=sample_rate, skipped=skipped)
