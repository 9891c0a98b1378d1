"""The synthetic Slakh-style renderer: layout, metadata, determinism, levels, resume, chorales, argument errors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import yaml

from ucr import audio
from ucr.data import synth

SR = 24000
STEM_FIELDS = {"inst_class", "program_num", "is_drum", "audio_rendered", "midi_program_name", "plugin_name", "name"}


def _windows_rms(wave: np.ndarray, sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    """RMS over windows of ``seconds`` with half overlap: ``[L] -> [windows]``."""
    size, hop = int(seconds * sample_rate), int(seconds * sample_rate) // 2
    starts = range(0, len(wave) - size + 1, hop)
    return np.array([audio.rms(wave[s:s + size]) for s in starts])


@pytest.fixture(scope="module")
def drums_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "db"
    summary = synth.render_dataset("drums_bass", str(out), tracks=3, seconds=2.0, seed=7, progress=False)
    return out, summary


def test_plan_tracks_is_deterministic_and_covers_the_splits():
    plans = synth.plan_tracks(10, seed=3)
    assert plans == synth.plan_tracks(10, seed=3)
    assert [p.name for p in plans[:2]] == ["Track00001", "Track00002"]
    assert [p.split for p in plans].count("train") == 8
    assert {p.split for p in plans} == {"train", "validation", "test"}
    assert len({p.track_seed for p in plans}) == 10
    assert [p.track_seed for p in synth.plan_tracks(10, seed=4)] != [p.track_seed for p in plans]
    assert {p.split for p in synth.plan_tracks(3, seed=0)} == {"train", "validation", "test"}
    assert [p.split for p in synth.plan_tracks(1, seed=0)] == ["train"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plans[0].split = "test"


def test_default_soundfont_is_shipped_with_pretty_midi():
    path = synth.default_soundfont()
    assert Path(path).name == "TimGM6mb.sf2" and Path(path).is_file()
    assert synth.resolve_soundfont(None) == path


def test_layout_metadata_and_summary(drums_dataset):
    out, summary = drums_dataset
    assert summary["tracks"] == 3 and summary["rendered"] == 3
    assert summary["splits"] == {"train": 1, "validation": 1, "test": 1}
    assert summary["seconds_of_audio"] == pytest.approx(6.0)
    assert summary["skipped"] == {} and summary["wall_seconds"] > 0
    assert json.loads((out / "synth_summary.json").read_text())["rendered"] == 3
    for plan in synth.plan_tracks(3, seed=7):
        track = out / plan.split / plan.name
        names = {p.relative_to(track).as_posix() for p in track.rglob("*") if p.is_file()}
        assert names == {"mix.flac", "metadata.yaml", "all_src.mid", "stems/S00.flac", "stems/S01.flac",
                         "MIDI/S00.mid", "MIDI/S01.mid"}
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        assert meta["audio_dir"] == "stems" and meta["midi_dir"] == "MIDI" and meta["normalized"] is True
        assert {"UUID", "overall_gain"} <= set(meta)
        assert {k: meta["ucr_synth"][k] for k in ("kind", "seed", "seconds", "soundfont")} == {
            "kind": "drums_bass", "seed": 7, "seconds": 2.0, "soundfont": "TimGM6mb.sf2"}
        assert 80 <= meta["ucr_synth"]["tempo"] <= 150
        drums, bass = meta["stems"]["S00"], meta["stems"]["S01"]
        assert STEM_FIELDS <= set(drums) and STEM_FIELDS <= set(bass)
        assert (drums["inst_class"], drums["is_drum"], drums["program_num"]) == ("Drums", True, 0)
        assert bass["inst_class"] == "Bass" and not bass["is_drum"] and 32 <= bass["program_num"] <= 39
        assert bass["plugin_name"] == "TimGM6mb.sf2" and bass["audio_rendered"] is True

        mix, rate = audio.read(str(track / "mix.flac"))
        assert rate == SR and mix.shape == (1, 2 * SR)
        stems = [audio.read(str(track / "stems" / f"S0{i}.flac"))[0] for i in range(2)]
        np.testing.assert_allclose(mix, stems[0] + stems[1], atol=1e-5)  # the mix is the sum of the stems
        assert 0.3 < audio.peak(mix) < 1.0  # loud, never clipping
        for stem in stems:
            assert _windows_rms(stem[0], SR).min() > 0.01  # every stem audible throughout
        midi = pretty_midi.PrettyMIDI(io.BytesIO((track / "MIDI" / "S00.mid").read_bytes()))
        assert midi.instruments[0].is_drum and len(midi.instruments[0].notes) > 4
        assert len(pretty_midi.PrettyMIDI(str(track / "all_src.mid")).instruments) == 2


def test_render_track_is_deterministic():
    plans = synth.plan_tracks(3, seed=11)
    first = synth.render_track("drums_bass", plans[0], seconds=1.0)
    again = synth.render_track("drums_bass", plans[0], seconds=1.0)
    assert len(first.stems) == 2
    for (sid, wave, meta), (sid2, wave2, meta2) in zip(first.stems, again.stems):
        assert sid == sid2 and wave.dtype == np.float32 and wave.shape == (SR,)
        np.testing.assert_array_equal(wave, wave2)
    assert first.metadata == again.metadata and first.midi == again.midi
    np.testing.assert_array_equal(first.mixture, np.sum([w for _, w, _ in first.stems], axis=0))
    other = synth.render_track("drums_bass", synth.plan_tracks(3, seed=12)[0], seconds=1.0)
    assert not np.array_equal(first.stems[1][1], other.stems[1][1])
    neighbour = synth.render_track("drums_bass", plans[1], seconds=1.0)
    assert not np.array_equal(first.stems[0][1], neighbour.stems[0][1])
    low_rate = synth.render_track("drums_bass", plans[0], seconds=0.5, sample_rate=16000)
    assert low_rate.mixture.shape == (8000,) and low_rate.sample_rate == 16000


def test_grooves_vary_between_and_within_tracks():
    patterns = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        stems, info = synth.compose.compose_drums_bass(rng, 20.0, {"bass": synth.DEFAULT_BASS_POOL})
        step = 60.0 / info["tempo"] / 4
        bars: dict[int, set] = {}
        for start, _, pitch, _ in stems[0].notes:
            position = int(round(start / step))
            bars.setdefault(position // 16, set()).add((position % 16, pitch))
        track_patterns = {frozenset(bar) for bar in bars.values()}
        assert len(track_patterns) >= 3  # fills, sections and variations: not one loop
        patterns |= track_patterns
        assert len({pitch for _, _, pitch, _ in stems[1].notes}) >= 3  # the bass moves
    assert len(patterns) >= 18


def test_resume_renders_only_the_missing_track(tmp_path):
    out = tmp_path / "db"
    first = synth.render_dataset("drums_bass", str(out), tracks=3, seconds=1.0, seed=5, progress=False)
    assert first["rendered"] == 3
    plans = synth.plan_tracks(3, seed=5)
    kept = out / plans[0].split / plans[0].name / "mix.flac"
    kept_mtime = os.stat(kept).st_mtime_ns
    redo = out / plans[2].split / plans[2].name
    before = (redo / "stems" / "S01.flac").read_bytes()
    (redo / "metadata.yaml").unlink()
    second = synth.render_dataset("drums_bass", str(out), tracks=3, seconds=1.0, seed=5, progress=False)
    assert second["rendered"] == 1 and second["skipped"] == {"already_complete": 2}
    assert second["seconds_of_audio"] == pytest.approx(1.0)
    assert {item["track"] for item in second["skipped_items"]} == {plans[0].name, plans[1].name}
    assert (redo / "metadata.yaml").exists() and (redo / "stems" / "S01.flac").read_bytes() == before
    assert os.stat(kept).st_mtime_ns == kept_mtime
    with pytest.raises(ValueError, match="seconds"):  # a complete track drawn with other settings is not reused
        synth.render_dataset("drums_bass", str(out), tracks=3, seconds=2.0, seed=5, progress=False)


def test_chorales_voice_subset_and_instrument_pool():
    plan = synth.plan_tracks(1, seed=2)[0]
    track = synth.render_track("chorales", plan, seconds=2.0, voices=["tenor", "alto"],
                               instrument_pool={"alto": [41], "tenor": [42, 70]})
    assert [sid for sid, _, _ in track.stems] == ["S00", "S01"]
    metas = [meta for _, _, meta in track.stems]
    assert [m["inst_class"] for m in metas] == ["Alto", "Tenor"]  # canonical S/A/T/B order
    assert metas[0]["program_num"] == 41 and metas[1]["program_num"] in (42, 70)
    assert not any(m["is_drum"] for m in metas)
    info = track.metadata["ucr_synth"]
    assert info["kind"] == "chorales" and info["chorale"].startswith("bach/") and info["voices"] == ["alto", "tenor"]
    for _, wave, _ in track.stems:
        assert wave.shape == (2 * SR,) and _windows_rms(wave, SR).min() > 0.01
    assert audio.peak(track.mixture) < 1.0
    default = synth.render_track("chorales", plan, seconds=1.0)
    assert [m["inst_class"] for _, _, m in default.stems] == ["Soprano", "Bass"]


def test_failing_chorales_are_skipped_and_counted(tmp_path, monkeypatch):
    original = synth.compose.chorale_notes
    failed: list[str] = []

    def first_one_fails(name):
        if not failed or failed[0] == name:
            failed.append(name)
            return synth.plan.SourceError("chorale_bad_repeats", f"{name}: cannot expand Stream: badly formed repeats")
        return original(name)

    monkeypatch.setattr(synth.compose, "chorale_notes", first_one_fails)
    summary = synth.render_dataset("chorales", str(tmp_path / "ch"), tracks=1, seconds=1.0, seed=0,
                                   voices=("soprano",), progress=False)
    assert summary["rendered"] == 1 and summary["skipped"] == {"chorale_bad_repeats": 1}
    assert summary["skipped_items"][0]["source"] == failed[0]
    meta = yaml.safe_load(next((tmp_path / "ch").rglob("metadata.yaml")).read_text())
    assert meta["ucr_synth"]["chorale"] != failed[0]
    assert [m["inst_class"] for m in meta["stems"].values()] == ["Soprano"]


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "piano"}, r"kind.*drums_bass, chorales"),
    ({"tracks": 0}, r"tracks.*>= 1"),
    ({"seconds": 0}, r"seconds.*> 0"),
    ({"seconds": -1.5}, r"seconds.*> 0"),
    ({"kind": "chorales", "voices": ("soprano", "baritone")}, r"voices.*baritone.*soprano, alto, tenor, bass"),
    ({"voices": ("soprano",)}, r"voices.*chorales"),
    ({"soundfont": "/no/such/font.sf2"}, r"soundfont.*/no/such/font.sf2"),
    ({"split_fractions": (0.5, -0.5, 1.0)}, r"split_fractions"),
    ({"sample_rate": 1000}, r"sample_rate"),
    ({"kind": "chorales", "instrument_pool": {"soprano": [200]}}, r"instrument_pool.*0\.\.127"),
])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, match):
    arguments = {"kind": "drums_bass", "out": str(tmp_path / "x"), "tracks": 2, "seconds": 1.0, "seed": 0,
                 "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        synth.render_dataset(**arguments)
    assert not (tmp_path / "x").exists()  # nothing written before the arguments are checked


def test_render_track_checks_its_arguments_too():
    plan = synth.plan_tracks(1, seed=0)[0]
    with pytest.raises(ValueError, match="kind"):
        synth.render_track("noise", plan, 1.0)
    with pytest.raises(ValueError, match="seconds"):
        synth.render_track("drums_bass", plan, float("nan"))
    with pytest.raises(ValueError, match="soundfont"):
        synth.render_track("chorales", plan, 1.0, soundfont="missing.sf2")
