"""Synthetic multi-track music rendered from MIDI with FluidSynth, written in the Slakh2100 layout.

Nothing is downloaded: the General MIDI soundfont ships inside ``pretty_midi`` and the Bach chorales inside
``music21``. Two kinds of material are generated:

- ``drums_bass``: seeded procedural grooves (kick, snare, hats, ride, fills, crashes; swing and humanisation) on the
  GM drum channel plus a bass line (GM programs 32-39) that follows a drawn chord progression.
- ``chorales``: Bach chorales from music21's offline corpus, one stem per chosen voice (soprano/alto/tenor/bass),
  each voice played by a GM instrument drawn per track.

Layout (identical to Slakh2100, so one reader serves both)::

    OUT/
      synth_summary.json                  what the last ``render_dataset`` call did
      train/ validation/ test/
        Track00001/
          mix.flac                        sum of the stems, mono, ``sample_rate`` Hz, 24-bit FLAC
          stems/S00.flac, S01.flac, ...   one mono stem per instrument / voice
          MIDI/S00.mid, S01.mid, ...      the notes of each stem
          all_src.mid                     all stems in one MIDI file (at the track root, as in Slakh2100)
          metadata.yaml                   Slakh-style fields plus ``ucr_synth``; written LAST: it marks the
                                          track complete, so an interrupted run resumes where it stopped

Every file goes through :mod:`ucr.storage` (atomic; local paths or ``s3://`` URIs). Rendering a track is a pure
function of its :class:`TrackPlan` and the arguments, so tracks can be rendered in parallel by separate workers
(:func:`render_track` + :func:`write_track`).
"""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import yaml

from ucr import audio, storage

SYNTH_KINDS = ("drums_bass", "chorales")
SPLITS = ("train", "validation", "test")
VOICES = ("soprano", "alto", "tenor", "bass")
DEFAULT_VOICES = ("soprano", "bass")

# General MIDI programs (0-based) per chorale voice: strings, reeds, flutes, brass, organ and choir.
DEFAULT_CHORALE_POOL: dict[str, tuple[int, ...]] = {
    # violin, oboe, flute, trumpet, church organ, choir, clarinet, recorder
    "soprano": (40, 68, 73, 56, 19, 52, 71, 74),
    # viola, clarinet, English horn, French horn, church organ, choir, alto sax, string ensemble
    "alto": (41, 71, 69, 60, 19, 52, 65, 48),
    # cello, bassoon, trombone, French horn, church organ, choir, tenor sax, string ensemble
    "tenor": (42, 70, 57, 60, 19, 52, 66, 48),
    # contrabass, cello, bassoon, tuba, church organ, acoustic bass, trombone, baritone sax
    "bass": (43, 42, 70, 58, 19, 32, 57, 67),
}
DEFAULT_BASS_POOL: tuple[int, ...] = tuple(range(32, 40))  # the eight GM basses

# Level targets: each stem is brought to an RMS drawn in this range (dBFS), then the whole track is scaled down
# together when the mix would peak above MIX_PEAK.
STEM_RMS_DB = (-19.0, -15.0)
MIX_PEAK = 0.89  # about -1 dBFS

_MIN_RATE, _MAX_RATE = 8000, 96000

# GM percussion keys (channel 10).
_KICK, _SIDE_STICK, _SNARE, _CLAP = 36, 37, 38, 39
_HAT_CLOSED, _HAT_PEDAL, _HAT_OPEN = 42, 44, 46
_CRASH, _RIDE, _RIDE_BELL, _TAMBOURINE = 49, 51, 53, 54
_TOMS = (50, 48, 47, 45, 43, 41)  # high to floor

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
# Familiar progressions (scale degrees, 0 = tonic); used part of the time, random walks otherwise.
_PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 3), (1, 4, 0, 0), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4),
                 (0, 6, 5, 4), (0, 2, 3, 4), (0, 0, 3, 3), (0, 5, 1, 4))


# ----------------------------------------------------------------------------------------------------------------------
# Plans and results


@dataclass(frozen=True)
class TrackPlan:
    """Where one track goes and the seed it is drawn from.

    ``index``: 0-based position in the dataset; ``name``: ``Track{index+1:05d}``; ``split``: train/validation/test;
    ``seed``: the dataset seed; ``track_seed``: derived deterministically from ``(seed, index)``.
    """

    index: int
    split: str
    name: str
    seed: int
    track_seed: int


@dataclass
class RenderedTrack:
    """One rendered track, ready for :func:`write_track`.

    ``stems``: ``[(stem_id "S00", waveform float32 [L], stem metadata dict), ...]``;
    ``midi``: stem_id -> Standard MIDI File bytes; ``all_src_midi``: every stem in one MIDI file;
    ``mixture``: float32 ``[L]``, the sum of the stems; ``metadata``: the content of ``metadata.yaml``;
    ``skipped``: sources passed over while composing (chorales that failed), each ``{source, category, reason}``.
    """

    stems: list[tuple[str, np.ndarray, dict]]
    midi: dict[str, bytes]
    all_src_midi: bytes
    mixture: np.ndarray
    metadata: dict
    sample_rate: int
    skipped: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.mixture.shape[-1] / self.sample_rate


@dataclass
class _Stem:
    """A stem before rendering: its notes as ``(start_s, end_s, pitch, velocity)``."""

    name: str
    inst_class: str
    program: int
    is_drum: bool
    notes: list[tuple[float, float, int, int]]


class _SourceError(Exception):
    """A source (chorale) that cannot be used; ``category`` is a short key for the summary counts."""

    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category = category
        self.reason = reason


# ----------------------------------------------------------------------------------------------------------------------
# Arguments


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


def _check_kind(kind: str) -> None:
    if kind not in SYNTH_KINDS:
        raise ValueError(f"kind: unknown {kind!r}; allowed: {', '.join(SYNTH_KINDS)}")


def _check_seconds(seconds: float) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"seconds: must be a number > 0, got {seconds!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"seconds: must be a number > 0, got {seconds!r}")
    return value


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not _MIN_RATE <= int(sample_rate) <= _MAX_RATE:
        raise ValueError(f"sample_rate: must be an integer in [{_MIN_RATE}, {_MAX_RATE}] Hz, got {sample_rate!r}")
    return int(sample_rate)


def _check_voices(kind: str, voices: Sequence[str] | None) -> tuple[str, ...]:
    if kind != "chorales":
        if voices is not None:
            raise ValueError(f"voices: only used with kind='chorales' (got kind={kind!r}); leave it None")
        return ()
    if voices is None:
        return DEFAULT_VOICES
    if isinstance(voices, str):
        voices = (voices,)
    chosen = [str(v).lower() for v in voices]
    unknown = [v for v in chosen if v not in VOICES]
    if unknown:
        raise ValueError(f"voices: unknown {unknown}; allowed: {', '.join(VOICES)}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"voices: need one or more distinct voices from {', '.join(VOICES)}, got {list(voices)}")
    return tuple(v for v in VOICES if v in chosen)  # canonical S/A/T/B order


def _check_pool(kind: str, instrument_pool: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    defaults = dict(DEFAULT_CHORALE_POOL) if kind == "chorales" else {"bass": DEFAULT_BASS_POOL}
    if instrument_pool is None:
        return defaults
    if not isinstance(instrument_pool, Mapping):
        raise ValueError(f"instrument_pool: must be a dict voice -> list of GM programs, got {instrument_pool!r}")
    for key, programs in instrument_pool.items():
        if key not in defaults:
            raise ValueError(f"instrument_pool: unknown key {key!r} for kind={kind!r}; allowed: "
                             f"{', '.join(defaults)}")
        values = [programs] if isinstance(programs, (int, np.integer)) else list(programs)
        if not values or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p <= 127
                             for p in values):
            raise ValueError(f"instrument_pool[{key!r}]: need a non-empty list of GM programs in 0..127, "
                             f"got {programs!r}")
        defaults[key] = tuple(int(p) for p in values)
    return defaults


def _check_fractions(split_fractions: Sequence[float]) -> np.ndarray:
    try:
        fractions = np.asarray([float(f) for f in split_fractions], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"split_fractions: need three numbers (train, validation, test), got {split_fractions!r}") \
            from None
    if fractions.shape != (3,) or not np.isfinite(fractions).all() or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split_fractions: need three non-negative numbers (train, validation, test) with a "
                         f"positive sum, got {tuple(split_fractions)!r}")
    return fractions / fractions.sum()


def _check_tracks(tracks: int) -> int:
    if isinstance(tracks, bool) or not isinstance(tracks, (int, np.integer)) or tracks < 1:
        raise ValueError(f"tracks: must be an integer >= 1, got {tracks!r}")
    return int(tracks)


# ----------------------------------------------------------------------------------------------------------------------
# Planning


def _split_counts(tracks: int, fractions: np.ndarray) -> list[int]:
    raw = fractions * tracks
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: tracks - counts.sum()]:
        counts[i] += 1
    if tracks >= 3:  # every split with a positive fraction gets at least one track
        for i in range(3):
            if fractions[i] > 0 and counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] += 1
    return [int(c) for c in counts]


def track_seed(seed: int, index: int) -> int:
    """The seed of track ``index`` in a dataset drawn with ``seed`` (a 63-bit integer, stable across versions)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def plan_tracks(tracks: int, seed: int, split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[TrackPlan]:
    """Deterministic plans for ``tracks`` tracks: Track00001.. in order, train first, then validation, then test.

    Split sizes follow ``split_fractions`` (rounded by largest remainder); with ``tracks >= 3`` every split with a
    positive fraction gets at least one track.
    """
    tracks = _check_tracks(tracks)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: must be an integer, got {seed!r}")
    counts = _split_counts(tracks, _check_fractions(split_fractions))
    splits = [name for name, count in zip(SPLITS, counts) for _ in range(count)]
    return [TrackPlan(index=i, split=split, name=f"Track{i + 1:05d}", seed=int(seed), track_seed=track_seed(seed, i))
            for i, split in enumerate(splits)]


# ----------------------------------------------------------------------------------------------------------------------
# drums_bass: procedural grooves and bass lines

_GROOVE_STYLES = ("rock", "four_floor", "halftime", "breakbeat", "funk", "pop")


def _draw_groove(rng: np.random.Generator) -> dict:
    """One drum groove: hit positions on a 16-step bar and how the hats/cymbals and ghost notes behave."""
    style = str(rng.choice(_GROOVE_STYLES))
    kick = {"rock": [0, 8], "four_floor": [0, 4, 8, 12], "halftime": [0], "breakbeat": [0, 10],
            "funk": [0, 3, 10], "pop": [0, 6, 8]}[style]
    snare = {"halftime": [8]}.get(style, [4, 12])
    kick = set(kick)
    extra_slots = [s for s in range(16) if s not in kick and s not in snare]
    for slot in extra_slots:  # a few extra kicks, mostly on 8th positions
        if rng.random() < (0.18 if slot % 2 == 0 else 0.07):
            kick.add(slot)
    snare = set(snare)
    if style == "breakbeat" and rng.random() < 0.7:
        snare.add(int(rng.choice([7, 9, 15])))
    hat_step = int(rng.choice([1, 2, 2, 2, 4], p=None))
    cymbal = _RIDE if rng.random() < 0.2 else (_HAT_PEDAL if rng.random() < 0.05 else _HAT_CLOSED)
    open_slots = {s for s in (2, 6, 10, 14) if rng.random() < (0.55 if style == "four_floor" else 0.12)}
    return {
        "style": style,
        "kick": sorted(kick),
        "snare": sorted(snare),
        "ghost_p": float(rng.uniform(0.0, 0.3)),
        "hat_step": hat_step,
        "cymbal": cymbal,
        "open": sorted(open_slots),
        "clap": bool(rng.random() < 0.15),
        "tambourine": bool(rng.random() < 0.12),
    }


def _mutate_groove(rng: np.random.Generator, groove: dict) -> dict:
    """A variation of ``groove`` (a B section): other kicks, hat density or cymbal."""
    new = dict(groove)
    kick = set(groove["kick"])
    for _ in range(int(rng.integers(1, 4))):
        slot = int(rng.integers(1, 16))
        if slot not in groove["snare"]:
            kick.symmetric_difference_update({slot})
    new["kick"] = sorted(kick | {0})
    if rng.random() < 0.5:
        new["hat_step"] = int(rng.choice([1, 2, 4]))
    if rng.random() < 0.4:
        new["cymbal"] = _RIDE if groove["cymbal"] != _RIDE else _HAT_CLOSED
    if rng.random() < 0.4:
        new["open"] = sorted({int(s) for s in rng.choice([2, 6, 10, 14], size=int(rng.integers(0, 3)),
                                                          replace=False)})
    new["ghost_p"] = float(np.clip(groove["ghost_p"] + rng.normal(0, 0.1), 0.0, 0.35))
    return new


def _groove_bar(rng: np.random.Generator, groove: dict, fill_from: int | None,
                crash: bool) -> list[tuple[int, int, float]]:
    """Hits of one bar as ``(step, gm_key, velocity_offset)`` (offsets relative to each instrument's base level)."""
    hits: list[tuple[int, int, float]] = []
    end = 16 if fill_from is None else fill_from
    for step in range(0, end):
        if step in groove["kick"] and (rng.random() > 0.04 or step == 0):
            hits.append((step, _KICK, 8 if step == 0 else 0))
        if step in groove["snare"]:
            hits.append((step, _SNARE, 6))
            if groove["clap"]:
                hits.append((step, _CLAP, -10))
        elif step % 2 == 1 and rng.random() < groove["ghost_p"]:
            hits.append((step, _SNARE, -55))
        if step % groove["hat_step"] == 0:
            if step == 0 and crash:
                hits.append((step, _CRASH, 5))
            elif step in groove["open"]:
                hits.append((step, _HAT_OPEN, -5))
            else:
                accent = 6 if step % 4 == 0 else (-8 if step % 2 else 0)
                hits.append((step, groove["cymbal"], accent))
        if groove["tambourine"] and step % 4 == 2:
            hits.append((step, _TAMBOURINE, -15))
    if fill_from is not None:
        hits += _fill(rng, fill_from)
    return hits


def _fill(rng: np.random.Generator, start: int) -> list[tuple[int, int, float]]:
    """A fill from ``start`` to the end of the bar: descending toms, a snare roll, or a mix of both."""
    kind = rng.choice(["toms", "snare_roll", "mixed"])
    rate = int(rng.choice([1, 2], p=[0.6, 0.4]))  # 16ths or 8ths
    steps = list(range(start, 16, rate))
    toms = list(_TOMS[int(rng.integers(0, 2)):])
    hits = []
    for i, step in enumerate(steps):
        ramp = -20 + 25 * i / max(1, len(steps) - 1)  # crescendo
        if kind == "snare_roll" or (kind == "mixed" and rng.random() < 0.5):
            hits.append((step, _SNARE, ramp))
        else:
            hits.append((step, toms[min(len(toms) - 1, i * len(toms) // len(steps))], ramp))
        if step % 4 == 0 and rng.random() < 0.5:
            hits.append((step, _KICK, 0))
    return hits


def _draw_progression(rng: np.random.Generator) -> list[int]:
    """Four scale degrees (0 = tonic): a familiar progression or a random walk."""
    if rng.random() < 0.45:
        progression = list(_PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))])
    else:
        weights = np.array([3.0, 1.2, 0.8, 2.2, 2.2, 1.8, 0.8])
        progression = [0 if rng.random() < 0.7 else int(rng.choice(7, p=weights / weights.sum()))]
        while len(progression) < 4:
            w = weights.copy()
            w[progression[-1]] *= 0.15  # rarely repeat a chord
            progression.append(int(rng.choice(7, p=w / w.sum())))
    if rng.random() < 0.25:  # rotate: not every progression starts on the tonic
        shift = int(rng.integers(1, 4))
        progression = progression[shift:] + progression[:shift]
    return progression


def _bass_rhythm(rng: np.random.Generator, groove: dict) -> tuple[str, list[int]]:
    """Onset steps of the bass in one bar (16 steps) and the name of the rhythm family."""
    family = str(rng.choice(["long", "quarters", "eighths", "kick", "syncopated", "octaves", "sixteenths"],
                            p=[0.1, 0.18, 0.2, 0.2, 0.17, 0.1, 0.05]))
    if family == "long":
        steps = [0, 8] if rng.random() < 0.6 else [0]
    elif family == "quarters":
        steps = [0, 4, 8, 12]
    elif family in ("eighths", "octaves"):
        steps = list(range(0, 16, 2))
    elif family == "kick":
        steps = sorted(set(groove["kick"]) | {0})
    elif family == "sixteenths":
        steps = [s for s in range(16) if s % 4 == 0 or rng.random() < 0.55]
    else:
        steps = [0] + [s for s in range(1, 16) if rng.random() < (0.45 if s % 2 == 0 else 0.3)]
    return family, steps


def _chord_tones(key_root: int, scale: tuple[int, ...], degree: int) -> dict[str, int]:
    """Semitone offsets of the chord on ``degree`` (root pitch class relative to the key's root)."""
    root = scale[degree % 7]
    third = (scale[(degree + 2) % 7] - root) % 12
    fifth = (scale[(degree + 4) % 7] - root) % 12
    return {"root": (key_root + root) % 12, "third": third, "fifth": fifth}


def _bass_pitch(rng: np.random.Generator, chord: dict, family: str, position: int, low: int) -> int:
    """A bass pitch for one onset: mostly root, else fifth, octave, third or a neighbouring scale tone."""
    root = low + (chord["root"] - low) % 12
    if position == 0:
        return root
    if family == "octaves":
        return root + (12 if position % 2 else 0)
    choice = rng.choice(["root", "fifth", "octave", "third", "low_fifth", "step"],
                        p=[0.38, 0.2, 0.15, 0.1, 0.07, 0.1])
    pitch = {"root": root, "fifth": root + chord["fifth"], "octave": root + 12, "third": root + chord["third"],
             "low_fifth": root + chord["fifth"] - 12, "step": root + int(rng.choice([-2, 2, 3]))}[str(choice)]
    return pitch if pitch >= 24 else pitch + 12


def _compose_drums_bass(rng: np.random.Generator, seconds: float,
                        pool: dict[str, tuple[int, ...]]) -> tuple[list[_Stem], dict]:
    """Drums + bass for ``seconds``: two sections (A/B) of grooves, progressions and bass rhythms, with fills."""
    tempo = float(np.round(rng.uniform(80.0, 150.0), 1))
    step_s = 60.0 / tempo / 4
    swing = 0.0 if rng.random() < 0.45 else float(rng.uniform(0.05, 0.33))
    swing_unit = int(rng.choice([1, 2]))  # swing the off-16ths or the off-8ths
    jitter_s = float(rng.uniform(0.0, 0.008))
    vel_sd = float(rng.uniform(3.0, 9.0))
    phrase_bars = int(rng.choice([2, 4, 4, 4, 8]))
    fill_p = float(rng.uniform(0.4, 0.9))
    bars = int(math.ceil(seconds / (16 * step_s))) + 1

    key_root = int(rng.integers(12))
    mode = str(rng.choice(list(_SCALES)))
    scale = _SCALES[mode]
    low = int(rng.integers(28, 36))  # lowest root of the bass register
    bass_program = int(rng.choice(pool["bass"]))
    gate = float(rng.uniform(0.45, 0.95))
    approach_p = float(rng.uniform(0.2, 0.7))
    drum_base = {_KICK: 100, _SNARE: 98, _CLAP: 90, _HAT_CLOSED: 78, _HAT_PEDAL: 75, _HAT_OPEN: 85, _RIDE: 80,
                 _CRASH: 100, _TAMBOURINE: 70}
    drum_level = float(rng.uniform(-10, 10))
    bass_level = float(rng.uniform(80, 110))

    sections = []
    groove_a = _draw_groove(rng)
    for name in ("A", "B"):
        groove = groove_a if name == "A" else (_mutate_groove(rng, groove_a) if rng.random() < 0.6
                                                 else _draw_groove(rng))
        family, onsets = _bass_rhythm(rng, groove)
        sections.append({"groove": groove, "progression": _draw_progression(rng),
                         "chord_steps": int(rng.choice([8, 16, 16, 16, 32])), "family": family, "onsets": onsets})

    def when(bar: int, step: float) -> float:
        offbeat = (step % (2 * swing_unit)) == swing_unit
        shift = swing * swing_unit * step_s if offbeat else 0.0
        return max(0.0, (bar * 16 + step) * step_s + shift + rng.normal(0.0, jitter_s))

    def velocity(base: float) -> int:
        return int(np.clip(round(base + rng.normal(0.0, vel_sd)), 1, 127))

    drums: list[tuple[float, float, int, int]] = []
    bass: list[tuple[float, float, int, int]] = []
    section, section_start, crash_next = 0, 0, True
    for bar in range(bars):
        in_phrase = bar % phrase_bars
        if bar > 0 and in_phrase == 0:
            if rng.random() < 0.35:
                section, section_start = 1 - section, bar
        current = sections[section]
        last_bar_of_phrase = in_phrase == phrase_bars - 1
        fill_from = None
        if last_bar_of_phrase and rng.random() < fill_p:
            fill_from = int(rng.choice([8, 12, 12, 14]))
        for step, key, offset in _groove_bar(rng, current["groove"], fill_from, crash_next):
            base = drum_base.get(key, 95) + drum_level + offset
            drums.append((when(bar, step), 0.0, key, velocity(base)))
        crash_next = fill_from is not None and rng.random() < 0.8

        # Bass: onsets of this bar (occasionally varied), pitches from the chord under each onset.
        onsets = list(current["onsets"])
        if rng.random() < 0.25:
            slot = int(rng.integers(1, 16))
            onsets = sorted(set(onsets) ^ {slot})
        chord_steps = current["chord_steps"]
        progression = current["progression"]
        for i, step in enumerate(onsets):
            absolute = (bar - section_start) * 16 + step
            degree = progression[(absolute // chord_steps) % len(progression)]
            chord = _chord_tones(key_root, scale, degree)
            nxt = onsets[i + 1] if i + 1 < len(onsets) else 16
            pitch = _bass_pitch(rng, chord, current["family"], i, low)
            next_absolute = (bar - section_start) * 16 + nxt
            next_degree = progression[(next_absolute // chord_steps) % len(progression)]
            if next_degree != degree and nxt - step <= 4 and i > 0 and rng.random() < approach_p:
                target = _chord_tones(key_root, scale, next_degree)["root"]
                target_pitch = low + (target - low) % 12
                pitch = target_pitch + int(rng.choice([-1, 1, -2, 2]))  # chromatic or scale approach
            start = when(bar, step)
            end = start + max(0.06, (nxt - step) * step_s * gate)
            accent = 10 if step % 4 == 0 else 0
            bass.append((start, end, int(np.clip(pitch, 24, 64)), velocity(bass_level + accent)))

    drums = [(s, s + 0.12, k, v) for s, _, k, v in drums]
    stems = [_Stem("Drums", "Drums", 0, True, drums), _Stem("Bass", "Bass", bass_program, False, bass)]
    info = {"tempo": tempo, "swing": round(swing, 3), "key": int(key_root), "mode": mode,
            "grooves": [s["groove"]["style"] for s in sections],
            "progressions": [s["progression"] for s in sections],
            "bass_rhythms": [s["family"] for s in sections]}
    return stems, info


# ----------------------------------------------------------------------------------------------------------------------
# chorales: Bach from music21's offline corpus


@lru_cache(maxsize=1)
def chorale_names() -> tuple[str, ...]:
    """The Bach chorales of music21's offline corpus (e.g. ``bach/bwv269``), sorted so the order is stable."""
    from music21 import corpus

    return tuple(sorted({str(n) for n in corpus.chorales.Iterator(returnType="filename")}))


@lru_cache(maxsize=128)
def _chorale_notes(name: str):
    """``(voices, length_quarters)`` with ``voices[v] = ((onset_q, duration_q, midi_pitch), ...)`` in S/A/T/B order,
    repeats expanded; or a :class:`_SourceError` (returned, so failures are cached too)."""
    try:
        from music21 import corpus, repeat

        score = corpus.parse(name)
        parts = list(score.parts)
        if len(parts) != 4:  # some chorales add instrument parts; keep them only when the four voices are named
            named = {str(p.partName or "").strip().lower(): i for i, p in enumerate(parts)}
            if not all(v in named for v in VOICES):
                return _SourceError("chorale_not_four_parts", f"{name}: {len(parts)} parts, not four voices")
            keep = [named[v] for v in VOICES]
        else:
            keep = [0, 1, 2, 3]
        try:
            expanded = score.expandRepeats()
        except repeat.ExpanderException as err:
            return _SourceError("chorale_bad_repeats", f"{name}: {err}")
        voices = []
        expanded_parts = list(expanded.parts)
        for i in keep:
            notes = []
            for element in expanded_parts[i].stripTies().flatten().notes:
                duration = float(element.quarterLength)
                if duration <= 0:  # grace notes
                    continue
                for pitch in element.pitches:
                    notes.append((float(element.offset), duration, int(pitch.midi)))
            voices.append(tuple(sorted(notes)))
        length = float(expanded.highestTime)
        if length <= 0 or any(not v for v in voices):
            return _SourceError("chorale_empty", f"{name}: a voice has no notes")
        return tuple(voices), length
    except Exception as err:  # noqa: BLE001 - a broken corpus file is skipped and counted, never fatal
        return _SourceError("chorale_unreadable", f"{name}: {type(err).__name__}: {err}")


def _compose_chorale(rng: np.random.Generator, seconds: float, voices: tuple[str, ...],
                     pool: dict[str, tuple[int, ...]]) -> tuple[list[_Stem], dict, list[dict]]:
    """The chosen voices of one chorale from a drawn start beat, looped to ``seconds`` at a drawn tempo."""
    names = chorale_names()
    first = int(rng.integers(len(names)))
    skipped: list[dict] = []
    for attempt in range(len(names)):
        name = names[(first + attempt) % len(names)]
        result = _chorale_notes(name)
        if isinstance(result, _SourceError):
            skipped.append({"source": name, "category": result.category, "reason": result.reason})
            continue
        parts, length = result
        break
    else:
        raise RuntimeError("no Bach chorale in the music21 corpus could be used")

    tempo = float(np.round(rng.uniform(60.0, 100.0), 1))  # quarter notes per minute
    quarter_s = 60.0 / tempo
    transpose = int(rng.integers(-3, 4))
    starts = sorted({on for part in parts for on, _, _ in part if on == int(on) and on < length - 1})
    start = 0.0 if rng.random() < 0.35 or not starts else float(starts[int(rng.integers(len(starts)))])
    articulation = float(rng.uniform(0.85, 0.98))

    stems = []
    used: set[int] = set()
    for voice in voices:
        part = parts[VOICES.index(voice)]
        choices = [p for p in pool[voice] if p not in used] or list(pool[voice])
        program = int(rng.choice(choices))
        used.add(program)
        level = float(rng.uniform(75, 105))
        notes = []
        cycle = 0
        while True:
            offset = (cycle * length - start) * quarter_s
            if offset >= seconds:
                break
            for on, duration, pitch in part:
                if cycle == 0 and on < start:
                    continue
                begin = offset + on * quarter_s
                if begin >= seconds:
                    break
                end = begin + max(0.05, duration * quarter_s * articulation)
                velocity = int(np.clip(round(level + rng.normal(0, 4)), 1, 127))
                notes.append((begin, end, int(np.clip(pitch + transpose, 0, 127)), velocity))
            cycle += 1
        stems.append(_Stem(voice.title(), voice.title(), program, False, notes))
    info = {"tempo": tempo, "chorale": name, "start_quarter": start, "transpose": transpose,
            "voices": list(voices)}
    return stems, info, skipped


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def _instrument(stem: _Stem, seconds: float):
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
    _check_kind(kind)
    seconds = _check_seconds(seconds)
    sample_rate = _check_sample_rate(sample_rate)
    chosen_voices = _check_voices(kind, voices)
    pool = _check_pool(kind, instrument_pool)
    sf2 = resolve_soundfont(soundfont)
    length = int(round(seconds * sample_rate))

    rng = np.random.default_rng(plan.track_seed)
    skipped: list[dict] = []
    if kind == "drums_bass":
        specs, info = _compose_drums_bass(rng, seconds, pool)
    else:
        specs, info, skipped = _compose_chorale(rng, seconds, chosen_voices, pool)

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


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def track_uri(out: str, plan: TrackPlan) -> str:
    """``OUT/<split>/TrackNNNNN``."""
    return storage.join(str(out), plan.split, plan.name)


def write_track(out: str, plan: TrackPlan, rendered: RenderedTrack) -> None:
    """Write one track under ``OUT/<split>/<name>/``; ``metadata.yaml`` last, after every other file is in place.

    A previous ``metadata.yaml`` is removed first, so a track that is being rewritten never looks complete.
    """
    folder = track_uri(out, plan)
    marker = storage.join(folder, "metadata.yaml")
    storage.remove(marker)
    for stem_id, wave, _ in rendered.stems:
        audio.write(storage.join(folder, "stems", f"{stem_id}.flac"), wave, rendered.sample_rate)
        storage.write_bytes(storage.join(folder, "MIDI", f"{stem_id}.mid"), rendered.midi[stem_id])
    storage.write_bytes(storage.join(folder, "all_src.mid"), rendered.all_src_midi)
    audio.write(storage.join(folder, "mix.flac"), rendered.mixture, rendered.sample_rate)
    storage.write_text(marker, yaml.safe_dump(rendered.metadata, sort_keys=False))


def _existing_metadata(out: str, plan: TrackPlan) -> dict | None:
    """The track's metadata when it is complete (its metadata.yaml exists and parses), else None."""
    marker = storage.join(track_uri(out, plan), "metadata.yaml")
    if not storage.exists(marker):
        return None
    try:
        data = yaml.safe_load(storage.read_text(marker))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def render_dataset(kind: str, out: str, tracks: int, seconds: float, seed: int, soundfont: str | None = None,
                   split_fractions: Sequence[float] = (0.8, 0.1, 0.1), sample_rate: int = 24000,
                   voices: Sequence[str] | None = None, instrument_pool: Mapping[str, Sequence[int]] | None = None,
                   progress: bool = True) -> dict:
    """Render ``tracks`` tracks of ``seconds`` each into ``out`` (Slakh layout) and return a summary.

    Tracks already complete (``metadata.yaml`` present) are skipped, so a rerun after an interruption resumes; a
    complete track rendered with other settings (kind, seed, seconds, sample rate, soundfont, voices) is an error.
    The summary (also written to ``OUT/synth_summary.json``) holds ``tracks`` (planned), ``rendered`` (this run),
    ``seconds_of_audio`` (rendered this run), ``dataset_seconds``, ``splits`` (tracks per split), ``skipped``
    (counts per reason: ``already_complete`` and the chorale failures), ``skipped_items`` (details) and
    ``wall_seconds``.
    """
    from tqdm.auto import tqdm

    _check_kind(kind)
    seconds = _check_seconds(seconds)
    sample_rate = _check_sample_rate(sample_rate)
    chosen_voices = _check_voices(kind, voices)
    _check_pool(kind, instrument_pool)
    sf2 = resolve_soundfont(soundfont)
    plans = plan_tracks(tracks, seed, split_fractions)
    expected = {"kind": kind, "seed": int(seed), "seconds": seconds, "sample_rate": sample_rate,
                "soundfont": Path(sf2).name}
    if kind == "chorales":
        expected["voices"] = list(chosen_voices)

    started = time.perf_counter()
    skipped: dict[str, int] = {}
    items: list[dict] = []
    rendered_count = 0
    bar = tqdm(plans, desc=f"synth {kind}", unit="track", disable=not progress)
    for plan in bar:
        existing = _existing_metadata(out, plan)
        if existing is not None:
            found = existing.get("ucr_synth", {}) or {}
            different = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
            if different:
                detail = ", ".join(f"{k}: {old!r} there, {new!r} asked" for k, (old, new) in different.items())
                raise ValueError(f"out: {track_uri(out, plan)} is a complete track rendered with other settings "
                                 f"({detail}); use a new output folder")
            skipped["already_complete"] = skipped.get("already_complete", 0) + 1
            items.append({"track": plan.name, "split": plan.split, "reason": "already_complete"})
            continue
        rendered = render_track(kind, plan, seconds, sample_rate=sample_rate, soundfont=sf2, voices=voices,
                                instrument_pool=instrument_pool)
        for source in rendered.skipped:
            skipped[source["category"]] = skipped.get(source["category"], 0) + 1
            items.append({"track": plan.name, "split": plan.split, "source": source["source"],
                          "reason": source["category"], "detail": source["reason"]})
        write_track(out, plan, rendered)
        rendered_count += 1
        bar.set_postfix(rendered=rendered_count, skipped=sum(skipped.values()))
    bar.close()
    wall = time.perf_counter() - started

    summary = {
        "kind": kind,
        "out": str(out),
        "seed": int(seed),
        "seconds": seconds,
        "sample_rate": sample_rate,
        "soundfont": Path(sf2).name,
        "tracks": len(plans),
        "rendered": rendered_count,
        "seconds_of_audio": round(rendered_count * seconds, 3),
        "dataset_seconds": round(len(plans) * seconds, 3),
        "splits": {split: sum(p.split == split for p in plans) for split in SPLITS},
        "skipped": skipped,
        "skipped_items": items,
        "wall_seconds": round(wall, 3),
        "audio_seconds_per_wall_second": round(rendered_count * seconds / wall, 2) if wall > 0 else None,
    }
    if kind == "chorales":
        summary["voices"] = list(chosen_voices)
    storage.write_text(storage.join(str(out), "synth_summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
