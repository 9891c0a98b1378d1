"""Dataset readers: Slakh2100 and MUSDB18-HQ folder layouts, on local disk or ``s3://``, and chunking.

Slakh2100 (and the synthetic renderer, which writes the same layout)::

    ROOT/{train,validation,test,omitted}/TrackNNNNN/mix.flac
                                              /stems/SNN.flac
                                              /metadata.yaml   (per stem: inst_class, audio_rendered, ...)

Sources are chosen by ``inst_class``; several stems of one class are summed into one source. A track missing a
requested class is skipped (and counted). MUSDB18-HQ::

    ROOT/{train,test}/<track name>/{mixture,drums,bass,other,vocals}.wav

Every problem with one track (corrupt, truncated, empty or non-audio files, a missing stem, malformed metadata,
stems at different sample rates) raises :class:`TrackSkipped` with the reason, so a job can count it and go on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import yaml

from ucr import audio, storage

SLAKH_SPLITS = ("train", "validation", "test")
MUSDB_STEMS = ("drums", "bass", "other", "vocals")


AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")  # files whose size and mtime enter the dataset fingerprint


class TrackSkipped(Exception):
    """One track cannot be used; ``reason`` is a short category, ``detail`` the full message."""

    def __init__(self, track: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{track}: {reason}" + (f" ({detail})" if detail else ""))
        self.track = track
        self.reason = reason
        self.detail = detail


@dataclass
class SkipReport:
    """Skipped tracks and chunks, counted by reason."""

    tracks: list[dict] = field(default_factory=list)
    dropped_silent_chunks: int = 0

    def add(self, skipped: TrackSkipped) -> None:
        self.tracks.append({"track": skipped.track, "reason": skipped.reason, "detail": skipped.detail})

    def counts(self) -> dict[str, int]:
        return dict(Counter(entry["reason"] for entry in self.tracks))

    def merge(self, other: "SkipReport") -> None:
        self.tracks.extend(other.tracks)
        self.dropped_silent_chunks += other.dropped_silent_chunks

    def to_dict(self) -> dict:
        return {"skipped_tracks": len(self.tracks), "by_reason": self.counts(),
                "dropped_silent_chunks": self.dropped_silent_chunks, "tracks": self.tracks}

    def summary(self) -> str:
        if not self.tracks and not self.dropped_silent_chunks:
            return "no tracks skipped"
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.counts().items()))
        return (f"{len(self.tracks)} track(s) skipped ({reasons or 'none'}); "
                f"{self.dropped_silent_chunks} silent chunk(s) dropped")


@dataclass(frozen=True)
class Track:
    """One track's sources, resampled and mono: ``sources [S, L]`` in the order requested."""

    name: str
    sources: np.ndarray
    sample_rate: int


def list_tracks(root: str, split: str, layout: str = "slakh") -> list[str]:
    """Track names in a split, sorted. The Slakh ``omitted`` split is only read when asked for by name."""
    if layout not in ("slakh", "musdb"):
        raise ValueError(f"layout {layout!r} is not supported; choose 'slakh' or 'musdb'")
    split_uri = storage.join(root, split)
    if not storage.exists(split_uri):
        available = [name for name in storage.listdir(root) if storage.isdir(storage.join(root, name))]
        raise ValueError(f"split {split!r} not found under {root}; available: {available}")
    names = [name for name in storage.listdir(split_uri) if not name.startswith(".")]
    if layout == "slakh":
        names = [name for name in names if name.startswith("Track")]
    return sorted(name for name in names if storage.isdir(storage.join(split_uri, name)))


def _read_stem(uri: str, track: str, sample_rate: int) -> tuple[np.ndarray, int]:
    """Mono float32 [L] at ``sample_rate``, plus the file's own rate."""
    try:
        file_info = audio.info(uri)
        wave, _ = audio.read(uri, sample_rate=sample_rate, mono=True)
    except (ValueError, MemoryError) as err:  # AudioError, or a decoder's own complaint: skip the track, go on
        message = str(err)
        reason = "missing stem" if "not found" in message else (
            "truncated file" if "truncated" in message else (
                "empty file" if "empty" in message or "no samples" in message else (
                    "non-finite samples" if "NaN" in message else "unreadable audio")))
        raise TrackSkipped(track, reason, message) from None
    return wave[0], file_info.sample_rate


def _stack_sources(track: str, waves: list[np.ndarray]) -> np.ndarray:
    """Equal-length ``[S, L]``; lengths that differ by more than 10 ms are refused."""
    lengths = [len(w) for w in waves]
    if max(lengths) - min(lengths) > 0.01 * max(lengths) + 240:
        raise TrackSkipped(track, "length mismatch", f"source lengths {lengths}")
    length = min(lengths)
    return np.stack([w[:length] for w in waves]).astype(np.float32)


def load_slakh_track(root: str, split: str, name: str, sources: tuple[str, ...], sample_rate: int) -> Track:
    """Read one Slakh track: for each requested ``inst_class`` the sum of its rendered stems."""
    track_uri = storage.join(root, split, name)
    label = f"{split}/{name}"
    try:
        metadata = yaml.safe_load(storage.read_text(storage.join(track_uri, "metadata.yaml")))
    except FileNotFoundError:
        raise TrackSkipped(label, "missing metadata", "no metadata.yaml") from None
    except yaml.YAMLError as err:
        raise TrackSkipped(label, "malformed metadata", str(err).splitlines()[0]) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("stems"), dict):
        raise TrackSkipped(label, "malformed metadata", "metadata.yaml has no 'stems' mapping")
    audio_dir = metadata.get("audio_dir") or "stems"
    by_class: dict[str, list[str]] = {source: [] for source in sources}
    for stem_id, stem in sorted(metadata["stems"].items()):
        if not isinstance(stem, dict):
            raise TrackSkipped(label, "malformed metadata", f"stem {stem_id} is not a mapping")
        if stem.get("inst_class") in by_class and stem.get("audio_rendered", True):
            by_class[stem["inst_class"]].append(str(stem_id))
    missing = [source for source, stems in by_class.items() if not stems]
    if missing:
        raise TrackSkipped(label, "missing source class", f"no rendered stem of class {missing}")
    waves, rates = [], set()
    for source in sources:
        parts = []
        for stem_id in by_class[source]:
            wave, rate = _read_stem(storage.join(track_uri, audio_dir, f"{stem_id}.flac"), label, sample_rate)
            parts.append(wave)
            rates.add(rate)
        waves.append(_stack_sources(label, parts).sum(0))
    if len(rates) > 1:
        raise TrackSkipped(label, "sample-rate mismatch", f"stems at {sorted(rates)} Hz")
    return Track(name=name, sources=_stack_sources(label, waves), sample_rate=sample_rate)


def load_musdb_track(root: str, split: str, name: str, sources: tuple[str, ...], sample_rate: int) -> Track:
    """Read one MUSDB18-HQ track folder; ``sources`` are stem names (drums, bass, other, vocals)."""
    label = f"{split}/{name}"
    unknown = [s for s in sources if s.lower() not in MUSDB_STEMS]
    if unknown:
        raise ValueError(f"MUSDB sources must be among {list(MUSDB_STEMS)}, got {unknown}")
    waves, rates = [], set()
    for source in sources:
        wave, rate = _read_stem(storage.join(root, split, name, f"{source.lower()}.wav"), label, sample_rate)
        waves.append(wave)
        rates.add(rate)
    if len(rates) > 1:
        raise TrackSkipped(label, "sample-rate mismatch", f"stems at {sorted(rates)} Hz")
    return Track(name=name, sources=_stack_sources(label, waves), sample_rate=sample_rate)


def load_track(root: str, split: str, name: str, layout: str, sources: tuple[str, ...],
               sample_rate: int) -> Track:
    loader = {"slakh": load_slakh_track, "musdb": load_musdb_track}.get(layout)
    if loader is None:
        raise ValueError(f"layout {layout!r} is not supported; choose 'slakh' or 'musdb'")
    return loader(root, split, name, tuple(sources), sample_rate)


def usable_tracks(root: str, split: str, layout: str, sources: tuple[str, ...], sample_rate: int):
    """Yield the :class:`Track` of every track of a split that has all of ``sources``, in name order (tracks
    without them are passed over)."""
    for name in list_tracks(root, split, layout):
        try:
            yield load_track(root, split, name, layout, sources, sample_rate)
        except TrackSkipped:
            continue


def mix_sources(sources: np.ndarray, mode: str = "mean") -> np.ndarray:
    """``[S, L] -> [L]``: the training mixture (the paper: the mean of the sources)."""
    if mode == "mean":
        return sources.mean(0)
    if mode == "sum":
        return sources.sum(0)
    raise ValueError(f"mix mode {mode!r} is not supported; choose 'mean' or 'sum'")


@dataclass(frozen=True)
class Chunk:
    track: str
    start: int  # first sample in the track
    sources: np.ndarray  # [S, L_chunk]


def chunk_track(track: Track, chunk_seconds: float, silence_rms: float, start_jitter: int = 0
                ) -> tuple[list[Chunk], int]:
    """Cut ``[S, L]`` into non-overlapping chunks (a trailing partial chunk is dropped) and apply the paper's
    silence filter: a chunk is dropped when any source's RMS is below ``silence_rms``.

    ``start_jitter`` > 0 delays chunk ``i`` (nominally at ``i * length``) by ``0 <= d_i < start_jitter`` samples,
    drawn from the track's name (the same every time); a chunk that would then run past the end starts
    ``start_jitter`` samples earlier instead (overlapping the one before it by less than that), so the count of
    chunks does not change. Returns ``(kept chunks, number dropped as silent)``.
    """
    length = int(round(chunk_seconds * track.sample_rate))
    total = track.sources.shape[1]
    kept, dropped = [], 0
    count = total // length
    delays = np.zeros(count, dtype=np.int64)
    if start_jitter > 0:
        seed = int.from_bytes(hashlib.sha256(track.name.encode()).digest()[:8], "little")
        delays = np.random.default_rng(seed).integers(0, start_jitter, size=count)
    for index in range(count):
        start = index * length + int(delays[index])
        if start + length > total:
            start = max(0, start - start_jitter)
        piece = track.sources[:, start:start + length]
        if (audio.rms(piece, axis=1) < silence_rms).any():
            dropped += 1
            continue
        kept.append(Chunk(track.name, start, piece))
    return kept, dropped


def dataset_fingerprint(root: str, split: str, layout: str, tracks: list[str]) -> str:
    """Changes when the split's track list, any track's metadata, or any audio file's size or modification time
    changes (so edited audio is never served from shards encoded before the edit)."""
    digest = hashlib.sha256(f"{layout}|{split}|".encode())
    fs, base = storage.filesystem(storage.join(root, split))
    base = base.rstrip("/")
    try:  # one listing of the whole split (one request per 1000 objects on S3), grouped by track below
        listing = fs.find(base, detail=True)
    except FileNotFoundError:
        listing = {}
    audio_by_track: dict[str, list[str]] = {}
    for path in sorted(listing):
        if path.endswith(AUDIO_SUFFIXES):
            audio_by_track.setdefault(path[len(base) + 1:].split("/", 1)[0], []).append(path)
    for name in tracks:
        digest.update(name.encode())
        if layout == "slakh":
            try:
                digest.update(storage.read_bytes(storage.join(root, split, name, "metadata.yaml")))
            except FileNotFoundError:
                digest.update(b"<no metadata>")
        for path in audio_by_track.get(name, []):
            entry = listing[path]
            stamp = entry.get("mtime") or entry.get("LastModified") or entry.get("ETag") or ""
            digest.update(f"{path[len(base):]}|{entry.get('size')}|{stamp}".encode())
    return digest.hexdigest()[:16]
