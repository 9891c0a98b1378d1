"""Music composition: seeded drum grooves with a bass line over a drawn progression (``drums_bass``), and Bach
chorale voices from music21's offline corpus (``chorales``). Notes only; :mod:`.render` turns them into audio."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ucr.data.synth.plan import VOICES, SourceError, Stem

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


def compose_drums_bass(rng: np.random.Generator, seconds: float,
                        pool: dict[str, tuple[int, ...]]) -> tuple[list[Stem], dict]:
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
    stems = [Stem("Drums", "Drums", 0, True, drums), Stem("Bass", "Bass", bass_program, False, bass)]
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
def chorale_notes(name: str):
    """``(voices, length_quarters)`` with ``voices[v] = ((onset_q, duration_q, midi_pitch), ...)`` in S/A/T/B order,
    repeats expanded; or a :class:`SourceError` (returned, so failures are cached too)."""
    try:
        from music21 import corpus, repeat

        score = corpus.parse(name)
        parts = list(score.parts)
        if len(parts) != 4:  # some chorales add instrument parts; keep them only when the four voices are named
            named = {str(p.partName or "").strip().lower(): i for i, p in enumerate(parts)}
            if not all(v in named for v in VOICES):
                return SourceError("chorale_not_four_parts", f"{name}: {len(parts)} parts, not four voices")
            keep = [named[v] for v in VOICES]
        else:
            keep = [0, 1, 2, 3]
        try:
            expanded = score.expandRepeats()
        except repeat.ExpanderException as err:
            return SourceError("chorale_bad_repeats", f"{name}: {err}")
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
            return SourceError("chorale_empty", f"{name}: a voice has no notes")
        return tuple(voices), length
    except Exception as err:  # noqa: BLE001 - a broken corpus file is skipped and counted, never fatal
        return SourceError("chorale_unreadable", f"{name}: {type(err).__name__}: {err}")


def compose_chorale(rng: np.random.Generator, seconds: float, voices: tuple[str, ...],
                     pool: dict[str, tuple[int, ...]]) -> tuple[list[Stem], dict, list[dict]]:
    """The chosen voices of one chorale from a drawn start beat, looped to ``seconds`` at a drawn tempo."""
    names = chorale_names()
    first = int(rng.integers(len(names)))
    skipped: list[dict] = []
    for attempt in range(len(names)):
        name = names[(first + attempt) % len(names)]
        result = chorale_notes(name)
        if isinstance(result, SourceError):
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
        stems.append(Stem(voice.title(), voice.title(), program, False, notes))
    info = {"tempo": tempo, "chorale": name, "start_quarter": start, "transpose": transpose,
            "voices": list(voices)}
    return stems, info, skipped
