import json

import numpy as np
import pytest
import torch

from tests.conftest import SR, write_slakh_track
from ucr import storage
from ucr.codec import MDCTCodec
from ucr.config import load_config
from ucr.data.latents import EncodeSettings, LatentCache, ManifestMismatch, encode_split
from ucr.data.readers import TrackSkipped, chunk_track, list_tracks, load_track, mix_sources, Track


def settings_for(root, split="train", with_stems=False, tracks_per_shard=1, chunk_seconds=0.5, silence_rms=0.01):
    return EncodeSettings(data_root=str(root), layout="slakh", split=split, sources=("Drums", "Bass"), mix="mean",
                          sample_rate=SR, chunk_seconds=chunk_seconds, silence_rms=silence_rms,
                          with_stems=with_stems, tracks_per_shard=tracks_per_shard)


# ------------------------------------------------------------------------------------------------ readers
def test_slakh_reader_sums_stems_of_a_class(slakh_root):
    assert list_tracks(str(slakh_root), "train") == ["Track00001", "Track00002", "Track00003", "Track00010"]
    expected = write_slakh_track(slakh_root / "x", "train", "Track00001",
                                 {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3), "S02": ("Bass", 110.0, 0.2),
                                  "S03": ("Piano", 440.0, 0.2)}, seed=0)
    track = load_track(str(slakh_root), "train", "Track00001", "slakh", ("Drums", "Bass"), SR)
    assert track.sources.shape == (2, 2 * SR)
    np.testing.assert_allclose(track.sources[1], expected["Bass"], atol=1e-6)  # two Bass stems summed
    np.testing.assert_allclose(track.sources[0], expected["Drums"], atol=1e-6)


def test_track_missing_a_class_is_skipped(slakh_root):
    with pytest.raises(TrackSkipped) as info:
        load_track(str(slakh_root), "train", "Track00010", "slakh", ("Drums", "Bass"), SR)
    assert info.value.reason == "missing source class" and "Bass" in info.value.detail


def test_omitted_split_not_read_by_default(slakh_root):
    for split in ("train", "validation", "test"):
        assert "Track00099" not in list_tracks(str(slakh_root), split)
    assert list_tracks(str(slakh_root), "omitted") == ["Track00099"]
    with pytest.raises(ValueError, match="available"):
        list_tracks(str(slakh_root), "nope")


def test_resampled_on_read(tmp_path):
    write_slakh_track(tmp_path, "train", "Track00001", {"S00": ("Drums", None, 0.3), "S01": ("Bass", 55.0, 0.3)},
                      sample_rate=44100)
    track = load_track(str(tmp_path), "train", "Track00001", "slakh", ("Drums", "Bass"), SR)
    assert track.sources.shape == (2, 2 * SR)


def test_musdb_layout(tmp_path):
    from ucr import audio

    t = np.arange(SR) / SR
    for stem, freq in {"drums": 100, "bass": 50, "other": 300, "vocals": 600, "mixture": 0}.items():
        audio.write(str(tmp_path / "train" / "Artist - Song" / f"{stem}.wav"),
                    np.stack([np.sin(2 * np.pi * freq * t)] * 2).astype(np.float32) * 0.3, 44100)
    assert list_tracks(str(tmp_path), "train", layout="musdb") == ["Artist - Song"]
    track = load_track(str(tmp_path), "train", "Artist - Song", "musdb", ("drums", "vocals"), SR)
    assert track.sources.shape[0] == 2 and abs(track.sources.shape[1] - SR * SR // 44100) <= 1
    with pytest.raises(ValueError, match="MUSDB sources"):
        load_track(str(tmp_path), "train", "Artist - Song", "musdb", ("Piano",), SR)


def test_chunking_and_silence_filter():
    loud = np.ones((2, SR * 3), dtype=np.float32) * 0.1
    loud[1, SR:2 * SR] = 0.001  # source 1 silent in the second second
    chunks, dropped = chunk_track(Track("t", loud, SR), chunk_seconds=1.0, silence_rms=0.01)
    assert [c.start for c in chunks] == [0, 2 * SR] and dropped == 1
    partial, _ = chunk_track(Track("t", loud[:, : int(SR * 1.5)], SR), chunk_seconds=1.0, silence_rms=0.0)
    assert len(partial) == 1  # the trailing half chunk is dropped
    two = np.stack([np.ones(4), 3 * np.ones(4)])
    assert mix_sources(two, "mean")[0] == 2 and mix_sources(two, "sum")[0] == 4


def test_start_jitter_moves_chunks_off_the_grid_deterministically():
    ramp = np.tile(np.arange(SR * 3, dtype=np.float32), (2, 1))  # sample i holds i: a chunk's content is its start
    plain, _ = chunk_track(Track("t", ramp, SR), chunk_seconds=1.0, silence_rms=0.0)
    jittered, _ = chunk_track(Track("t", ramp, SR), chunk_seconds=1.0, silence_rms=0.0, start_jitter=320)
    again, _ = chunk_track(Track("t", ramp, SR), chunk_seconds=1.0, silence_rms=0.0, start_jitter=320)
    other, _ = chunk_track(Track("u", ramp, SR), chunk_seconds=1.0, silence_rms=0.0, start_jitter=320)
    assert [c.start for c in plain] == [0, SR, 2 * SR]
    assert len(jittered) == 3 and [c.start for c in jittered] == [c.start for c in again]
    assert [c.start for c in jittered] != [c.start for c in other]  # drawn per track
    for index, chunk in enumerate(jittered[:2]):  # delayed by less than the jitter
        assert 0 <= chunk.start - index * SR < 320
    last = jittered[2].start  # would run past the end when delayed: starts the jitter earlier instead
    assert last == 2 * SR or 2 * SR - 320 <= last < 2 * SR
    for chunk in jittered:
        assert chunk.sources.shape == (2, SR) and chunk.sources[0, 0] == chunk.start
    assert any(c.start % 64 for c in jittered)  # off a 64-sample grid


def test_start_jitter_is_part_of_the_cache_key_only_when_set(slakh_root):
    plain = settings_for(slakh_root, "train")
    jittered = EncodeSettings(**{**plain.__dict__, "start_jitter": 320})
    assert "start_jitter" not in plain.key("c", "d")  # caches encoded before the setting existed still match
    assert jittered.key("c", "d")["start_jitter"] == 320
    with pytest.raises(ValueError, match="data.start_jitter"):
        load_config("smoke", {"data.start_jitter": -1})


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "unreadable audio|truncated file"),
    (lambda p: p.write_text("garbage" * 100), "unreadable audio"),
    (lambda p: p.unlink(), "missing stem"),
])
def test_bad_stems_skip_with_reason(slakh_root, damage, reason):
    damage(slakh_root / "train" / "Track00002" / "stems" / "S01.flac")
    with pytest.raises(TrackSkipped) as info:
        load_track(str(slakh_root), "train", "Track00002", "slakh", ("Drums", "Bass"), SR)
    assert pytest.importorskip("re").fullmatch(reason, info.value.reason), info.value


def test_malformed_metadata_and_rate_mismatch(slakh_root, tmp_path):
    (slakh_root / "train" / "Track00002" / "metadata.yaml").write_text("stems: [unclosed")
    with pytest.raises(TrackSkipped, match="malformed metadata"):
        load_track(str(slakh_root), "train", "Track00002", "slakh", ("Drums", "Bass"), SR)
    write_slakh_track(tmp_path, "train", "Track00001", {"S00": ("Drums", None, 0.3)}, sample_rate=SR)
    write_slakh_track(tmp_path / "other", "train", "Track00001", {"S01": ("Bass", 55.0, 0.3)}, sample_rate=16000)
    import shutil
    import yaml

    shutil.copy(tmp_path / "other/train/Track00001/stems/S01.flac", tmp_path / "train/Track00001/stems/S01.flac")
    meta = yaml.safe_load((tmp_path / "train/Track00001/metadata.yaml").read_text())
    meta["stems"]["S01"] = {"inst_class": "Bass", "audio_rendered": True}
    (tmp_path / "train/Track00001/metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(TrackSkipped, match="sample-rate mismatch"):
        load_track(str(tmp_path), "train", "Track00001", "slakh", ("Drums", "Bass"), SR)


# ------------------------------------------------------------------------------------------------ latent cache
def test_encode_split_builds_a_cache(slakh_root, tmp_path):
    out = str(tmp_path / "cache")
    codec = MDCTCodec()
    manifest = encode_split(settings_for(slakh_root), codec, out, progress=False)
    assert manifest["complete"] and manifest["key"]["codec"] == codec.fingerprint
    assert manifest["num_chunks"] == 3 * 4  # 3 usable tracks x 2 s / 0.5 s
    skipped = json.loads((tmp_path / "cache" / "skipped.json").read_text())
    assert skipped["by_reason"] == {"missing source class": 1}
    cache = LatentCache(out)
    item = cache.item(0)
    assert item["mixture"].shape == (320, 38)  # 0.5 s = 37.5 -> 38 frames
    assert len(cache.stats.mean) == 320


def test_cache_with_stems_matches_codec_linearity(slakh_root, tmp_path):
    out = str(tmp_path / "cache")
    encode_split(settings_for(slakh_root, split="test", with_stems=True), MDCTCodec(), out, progress=False)
    item = LatentCache(out).item(1)
    assert item["stems"].shape == (2, 320, 38) and item["stem_waves"].shape == (2, SR // 2)
    # MDCT is linear: latent of the mean mixture = mean of stem latents
    torch.testing.assert_close(item["mixture"], item["stems"].mean(0), atol=1e-5, rtol=1e-4)


def test_interrupted_encode_resumes_missing_shards_only(slakh_root, tmp_path):
    out = tmp_path / "cache"
    settings = settings_for(slakh_root)
    partial = encode_split(settings, MDCTCodec(), str(out), progress=False, stop_after_shards=2)
    assert not partial["complete"] and len(partial["shards"]) == 2
    with pytest.raises(ValueError, match="incomplete"):
        LatentCache(str(out))
    first_mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.pt")}
    manifest = encode_split(settings, MDCTCodec(), str(out), progress=False)
    assert manifest["complete"] and len(manifest["shards"]) == 4
    for name, mtime in first_mtimes.items():
        assert (out / name).stat().st_mtime_ns == mtime  # not rewritten
    again = encode_split(settings, MDCTCodec(), str(out), progress=False)  # idempotent
    assert again["shards"] == manifest["shards"]


def test_rerun_repairs_a_damaged_shard_and_counts_once(slakh_root, tmp_path):
    """A complete cache with a corrupted shard: the rerun finds it by checksum, encodes it again, recomputes the
    statistics from repaired data, keeps the dropped-chunk count, and removes a killed run's temp files."""
    out = tmp_path / "cache"
    settings = settings_for(slakh_root)
    first = encode_split(settings, MDCTCodec(), str(out), progress=False)
    good = (out / "shard-00001.pt").read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte, same size
    (out / "shard-00001.pt").write_bytes(bytes(damaged))
    (out / ".tmp-orphan").write_bytes(b"left by a kill")
    messages = []
    repaired = encode_split(settings, MDCTCodec(), str(out), progress=False, log=messages.append)
    assert any("1 shard(s) failed their checksum (shard-00001.pt)" in m for m in messages), messages
    assert (out / "shard-00001.pt").read_bytes() == good  # encoded again (deterministic codec)
    assert repaired["complete"] and repaired["stats"] == first["stats"]
    assert repaired["skipped"] == first["skipped"]  # re-encoding a shard does not count its drops twice
    assert not (out / ".tmp-orphan").exists()
    cache = LatentCache(str(out))
    cache.item(cache.num_chunks - 1)  # reading verifies the checksum of the last shard


def test_changed_audio_changes_the_dataset_fingerprint(slakh_root):
    import os

    from ucr.data.readers import dataset_fingerprint

    tracks = list_tracks(str(slakh_root), "train")
    before = dataset_fingerprint(str(slakh_root), "train", "slakh", tracks)
    assert dataset_fingerprint(str(slakh_root), "train", "slakh", tracks) == before
    stem = slakh_root / "train" / "Track00002" / "stems" / "S01.flac"
    stat = stem.stat()
    os.utime(stem, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same bytes and size, new mtime
    assert dataset_fingerprint(str(slakh_root), "train", "slakh", tracks) != before


def test_no_half_written_shards(slakh_root, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    from ucr.data import latents

    def fail(*args, **kwargs):
        raise RuntimeError("killed while encoding")

    monkeypatch.setattr(latents, "_save_tensors", fail)
    with pytest.raises(RuntimeError):
        encode_split(settings_for(slakh_root), MDCTCodec(), str(out), progress=False)
    assert not list(out.glob("shard-*")) and not list(out.glob(".tmp-*"))


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    storage.write_bytes(str(target), b"old")
    import os

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        storage.write_bytes(str(target), b"new content")
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_mismatched_manifest_is_refused(slakh_root, tmp_path):
    out = str(tmp_path / "cache")
    encode_split(settings_for(slakh_root), MDCTCodec(), out, progress=False)
    before = (tmp_path / "cache" / "manifest.json").read_text()
    with pytest.raises(ManifestMismatch, match="chunk_seconds"):
        encode_split(settings_for(slakh_root, chunk_seconds=1.0), MDCTCodec(), out, progress=False)
    with pytest.raises(ManifestMismatch, match="codec"):
        encode_split(settings_for(slakh_root), MDCTCodec(hop_length=160), out, progress=False)
    assert (tmp_path / "cache" / "manifest.json").read_text() == before  # nothing changed


def test_corrupted_shard_detected(slakh_root, tmp_path):
    out = tmp_path / "cache"
    encode_split(settings_for(slakh_root), MDCTCodec(), str(out), progress=False)
    shard = out / "shard-00001.pt"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="checksum"):
        LatentCache(str(out)).shard("shard-00001.pt")


def test_batches_are_a_function_of_seed_and_step(slakh_root, tmp_path):
    out = str(tmp_path / "cache")
    encode_split(settings_for(slakh_root), MDCTCodec(), out, progress=False)
    cache = LatentCache(out)
    a = cache.sample_batch(step=7, batch_size=5, crop_frames=16, seed=1)
    assert a.shape == (5, 320, 16)
    assert torch.equal(a, LatentCache(out).sample_batch(step=7, batch_size=5, crop_frames=16, seed=1))
    assert not torch.equal(a, cache.sample_batch(step=8, batch_size=5, crop_frames=16, seed=1))
    streamed = LatentCache(out, max_shards_in_memory=1)
    b = streamed.sample_batch(step=3, batch_size=4, crop_frames=16, shard_window=1)
    assert b.shape == (4, 320, 16) and len(streamed._loaded) == 1
    with pytest.raises(ValueError, match="longer than"):
        cache.sample_batch(step=0, batch_size=1, crop_frames=64)


# ------------------------------------------------------------------------------------------------ S3
def test_reader_and_cache_on_s3(slakh_root, s3_endpoint, tmp_path):
    fs, _ = storage.filesystem(s3_endpoint)
    fs.put(str(slakh_root) + "/", s3_endpoint[5:] + "/slakh", recursive=True)
    root = f"{s3_endpoint}/slakh"
    assert list_tracks(root, "train") == ["Track00001", "Track00002", "Track00003", "Track00010"]
    local = load_track(str(slakh_root), "train", "Track00001", "slakh", ("Drums", "Bass"), SR)
    remote = load_track(root, "train", "Track00001", "slakh", ("Drums", "Bass"), SR)
    np.testing.assert_array_equal(local.sources, remote.sources)
    out = f"{s3_endpoint}/cache"
    encode_split(settings_for(root), MDCTCodec(), out, progress=False, stop_after_shards=1)
    manifest = encode_split(settings_for(root), MDCTCodec(), out, progress=False)
    assert manifest["complete"] and manifest["num_chunks"] == 12
    cache = LatentCache(out, max_shards_in_memory=2)
    assert cache.sample_batch(step=0, batch_size=3, crop_frames=16).shape == (3, 320, 16)


def test_storage_absolute_paths_for_other_working_directories(tmp_path, monkeypatch):
    from ucr import storage

    monkeypatch.chdir(tmp_path)
    assert storage.absolute("runs/x/final.pt") == str(tmp_path / "runs" / "x" / "final.pt")
    assert storage.absolute("s3://bucket/runs/x") == "s3://bucket/runs/x"
    assert storage.absolute("file:///a/b") == "file:///a/b"


def test_a_stem_that_does_not_declare_its_length_is_read_not_fatal(slakh_root):
    """A streaming encoder's FLAC (total samples 0 in STREAMINFO) used to raise a bare numpy error that aborted the
    whole encode; it is read in full now."""
    import soundfile as sf

    from tests.conftest import unknown_length_flac

    stem = slakh_root / "train" / "Track00002" / "stems" / "S01.flac"
    before = load_track(str(slakh_root), "train", "Track00002", "slakh", ("Drums", "Bass"), SR)
    wave, rate = sf.read(str(stem), dtype="float32")
    stem.write_bytes(unknown_length_flac(wave, rate))
    after = load_track(str(slakh_root), "train", "Track00002", "slakh", ("Drums", "Bass"), SR)
    assert after.sources.shape == before.sources.shape
    np.testing.assert_allclose(after.sources, before.sources, atol=1e-3)


def test_downloads_go_to_a_per_user_cache_and_are_reverified(s3_endpoint, tmp_path, monkeypatch):
    """Weights folders fetched from S3 land in this user's cache (0700), and a copy is reused only while it
    verifies: a tampered local file or a changed remote file is downloaded again."""
    import os
    import stat

    from ucr import storage

    monkeypatch.setenv("UCR_CACHE", str(tmp_path / "cache"))
    remote = f"{s3_endpoint}/weights-{os.getpid()}"
    storage.write_bytes(f"{remote}/config.json", b'{"a": 1}')
    storage.write_bytes(f"{remote}/sub/model.safetensors", b"weights-v1")
    local = storage.download_folder(remote)
    assert local.startswith(str(tmp_path / "cache"))
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700
    model = os.path.join(local, "sub", "model.safetensors")
    assert open(model, "rb").read() == b"weights-v1"
    with open(model, "wb") as handle:  # planted in the cache: same size, other bytes
        handle.write(b"weights-XX")
    assert storage.download_folder(remote) == local
    assert open(model, "rb").read() == b"weights-v1"  # caught by the checksum, fetched again
    storage.write_bytes(f"{remote}/sub/model.safetensors", b"weights-v2 (longer)")
    storage.download_folder(remote)
    assert open(model, "rb").read() == b"weights-v2 (longer)"  # the remote changed: not served from the old copy
    assert not [name for name in os.listdir(os.path.dirname(local)) if name.startswith(".partial-")]
