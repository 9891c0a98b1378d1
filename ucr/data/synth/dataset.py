"""Dataset I/O in the Slakh2100 layout: where a track goes, writing it (metadata last, so an interrupted run
resumes), and :func:`render_dataset` (plan, render, write, summary)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from ucr import audio, storage
from ucr.data.synth.plan import (SPLITS, RenderedTrack, TrackPlan, check_kind, check_pool, check_sample_rate,
                                 check_seconds, check_voices, plan_tracks)
from ucr.data.synth.render import render_track, resolve_soundfont


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

    check_kind(kind)
    seconds = check_seconds(seconds)
    sample_rate = check_sample_rate(sample_rate)
    chosen_voices = check_voices(kind, voices)
    check_pool(kind, instrument_pool)
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
