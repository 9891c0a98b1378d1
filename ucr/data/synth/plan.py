"""Dataset plans and the checks of ``render_dataset``'s arguments: which track goes to which split with
which seed, the voice / instrument pools and level targets, and the small records a rendered track is made of."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

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
class Stem:
    """A stem before rendering: its notes as ``(start_s, end_s, pitch, velocity)``."""

    name: str
    inst_class: str
    program: int
    is_drum: bool
    notes: list[tuple[float, float, int, int]]


class SourceError(Exception):
    """A source (chorale) that cannot be used; ``category`` is a short key for the summary counts."""

    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category = category
        self.reason = reason




# ----------------------------------------------------------------------------------------------------------------------
# Argument checks (shared by render_track and render_dataset)


def check_kind(kind: str) -> None:
    if kind not in SYNTH_KINDS:
        raise ValueError(f"kind: unknown {kind!r}; allowed: {', '.join(SYNTH_KINDS)}")


def check_seconds(seconds: float) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"seconds: must be a number > 0, got {seconds!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"seconds: must be a number > 0, got {seconds!r}")
    return value


def check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not _MIN_RATE <= int(sample_rate) <= _MAX_RATE:
        raise ValueError(f"sample_rate: must be an integer in [{_MIN_RATE}, {_MAX_RATE}] Hz, got {sample_rate!r}")
    return int(sample_rate)


def check_voices(kind: str, voices: Sequence[str] | None) -> tuple[str, ...]:
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


def check_pool(kind: str, instrument_pool: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
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


def check_fractions(split_fractions: Sequence[float]) -> np.ndarray:
    try:
        fractions = np.asarray([float(f) for f in split_fractions], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"split_fractions: need three numbers (train, validation, test), got {split_fractions!r}") \
            from None
    if fractions.shape != (3,) or not np.isfinite(fractions).all() or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split_fractions: need three non-negative numbers (train, validation, test) with a "
                         f"positive sum, got {tuple(split_fractions)!r}")
    return fractions / fractions.sum()


def check_tracks(tracks: int) -> int:
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
    tracks = check_tracks(tracks)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: must be an integer, got {seed!r}")
    counts = _split_counts(tracks, check_fractions(split_fractions))
    splits = [name for name, count in zip(SPLITS, counts) for _ in range(count)]
    return [TrackPlan(index=i, split=split, name=f"Track{i + 1:05d}", seed=int(seed), track_seed=track_seed(seed, i))
            for i, split in enumerate(splits)]
