"""The latent cache: a split encoded once into shards of latents, with a manifest; read back without audio.

Layout under ``OUT`` (local folder or ``s3://``)::

    manifest.json      settings (codec fingerprint, dataset fingerprint, chunking, sources), shard entries with
                       chunk counts and sha256 checksums, latent statistics, ``complete``
    shard-00000.pt     {"mixture": [N, C, T], "tracks": [...], "starts": [...],
                        and with stems: "stems": [N, S, C, T], "stem_waves": [N, S, L], "mixture_wave": [N, L]}
    skipped.json       tracks skipped with reasons, silent chunks dropped

Shards are planned from the sorted track list (``tracks_per_shard`` each), written atomically, and recorded in the
manifest after each one, so a rerun after a kill encodes only what is missing. A manifest made with other settings
is refused instead of mixed with.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ucr import storage
from ucr.codec import LatentCodec, LatentStats
from ucr.data.readers import SkipReport, TrackSkipped, chunk_track, dataset_fingerprint, list_tracks, load_track, \
    mix_sources

MANIFEST = "manifest.json"
SKIPPED = "skipped.json"
FORMAT_VERSION = 1


class ManifestMismatch(ValueError):
    """The cache at this URI was made with other settings."""


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that determines the cache's content."""

    data_root: str
    layout: str
    split: str
    sources: tuple[str, ...]
    mix: str
    sample_rate: int
    chunk_seconds: float
    silence_rms: float
    with_stems: bool
    tracks_per_shard: int
    start_jitter: int = 0  # samples; see DataConfig.start_jitter

    @classmethod
    def from_config(cls, config, data_root: str, split: str, with_stems: bool | None = None,
                    tracks_per_shard: int | None = None) -> "EncodeSettings":
        """Settings from an ExperimentConfig's data section; stems by default for every split but train;
        ``tracks_per_shard`` None = ``data.tracks_per_shard``."""
        return cls(data_root=data_root, layout=config.data.layout, split=split, sources=tuple(config.data.sources),
                   mix=config.data.mix, sample_rate=config.data.sample_rate, chunk_seconds=config.data.chunk_seconds,
                   silence_rms=config.data.silence_rms,
                   with_stems=(split != "train") if with_stems is None else with_stems,
                   tracks_per_shard=config.data.tracks_per_shard if tracks_per_shard is None else tracks_per_shard,
                   start_jitter=config.data.start_jitter)

    def key(self, codec_fingerprint: str, data_fingerprint: str) -> dict:
        return {"format": FORMAT_VERSION, "codec": codec_fingerprint, "dataset": data_fingerprint,
                "layout": self.layout, "split": self.split, "sources": list(self.sources), "mix": self.mix,
                "sample_rate": self.sample_rate, "chunk_seconds": self.chunk_seconds,
                "silence_rms": self.silence_rms, "with_stems": self.with_stems,
                "tracks_per_shard": self.tracks_per_shard,
                **({"start_jitter": self.start_jitter} if self.start_jitter else {})}  # caches made before it match


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.pt"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _save_tensors(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _load_tensors(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def encode_shard(settings: EncodeSettings, tracks: list[str], codec: LatentCodec,
                 batch_size: int = 8) -> tuple[dict, SkipReport]:
    """Read, chunk and encode ``tracks``; return ``(shard payload, skip report)``. Pure: writes nothing."""
    report = SkipReport()
    chunks = []
    for name in tracks:
        try:
            track = load_track(settings.data_root, settings.split, name, settings.layout, settings.sources,
                               settings.sample_rate)
        except TrackSkipped as skipped:
            report.add(skipped)
            continue
        kept, dropped = chunk_track(track, settings.chunk_seconds, settings.silence_rms, settings.start_jitter)
        report.dropped_silent_chunks += dropped
        chunks.extend(kept)
    frames = codec.num_frames(int(round(settings.chunk_seconds * settings.sample_rate)))
    payload: dict = {"tracks": [c.track for c in chunks], "starts": [c.start for c in chunks]}
    if not chunks:
        payload["mixture"] = torch.zeros(0, codec.channels, frames)
        return payload, report
    sources = torch.from_numpy(np.stack([c.sources for c in chunks]))  # [N, S, L]
    mixture = torch.from_numpy(np.stack([mix_sources(c.sources, settings.mix) for c in chunks]))  # [N, L]
    latents = [codec.encode(mixture[i:i + batch_size, None]) for i in range(0, len(chunks), batch_size)]
    payload["mixture"] = torch.cat(latents)  # [N, C, T]
    if settings.with_stems:
        N, S, L = sources.shape
        flat = sources.reshape(N * S, 1, L)  # [N*S, 1, L]
        stem_latents = torch.cat([codec.encode(flat[i:i + batch_size]) for i in range(0, N * S, batch_size)])
        payload["stems"] = stem_latents.reshape(N, S, codec.channels, -1)  # [N, S, C, T]
        payload["stem_waves"] = sources  # [N, S, L]
        payload["mixture_wave"] = mixture  # [N, L]
    return payload, report


def _read_manifest(out: str) -> dict | None:
    uri = storage.join(out, MANIFEST)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_text(uri))
    except json.JSONDecodeError as err:
        raise ManifestMismatch(f"{uri} is not valid JSON ({err}); move it away or choose another --out") from None


def _describe_mismatch(found: dict, wanted: dict) -> str:
    diffs = [f"{key}: cache has {found.get(key)!r}, requested {wanted[key]!r}"
             for key in wanted if found.get(key) != wanted[key]]
    return "; ".join(diffs)


@dataclass
class EncodePlan:
    """What an encode run has to do: the manifest so far, the shards planned (track lists), the skip report."""

    settings: EncodeSettings
    out: str
    manifest: dict
    shards: list[list[str]]
    skipped: SkipReport
    damaged: list[str] = field(default_factory=list)  # shards found damaged by plan_encode, to be encoded again

    def repair_note(self) -> str:
        return (f"{len(self.damaged)} shard(s) failed their checksum ({', '.join(self.damaged[:5])}): encoding them "
                f"again")

    def pending(self) -> list[int]:
        """Indices of shards not written yet (or written but missing)."""
        return [i for i in range(len(self.shards))
                if shard_name(i) not in self.manifest["shards"]
                or not storage.exists(storage.join(self.out, shard_name(i)))]

    def drop_damaged(self) -> list[str]:
        """Verify every recorded shard against its size and SHA-256; forget the ones that fail (they are then pending
        and get encoded again, and the statistics are recomputed from the repaired cache). Returns their names."""
        damaged = []
        for name, entry in sorted(self.manifest["shards"].items()):
            uri = storage.join(self.out, name)
            try:
                data = storage.read_bytes(uri)
            except FileNotFoundError:
                continue  # missing: pending() already re-encodes it
            if len(data) != entry.get("bytes") or _sha256(data) != entry.get("sha256"):
                damaged.append(name)
        for name in damaged:
            del self.manifest["shards"][name]
        if damaged:
            self.manifest["complete"] = False
        return damaged


def plan_encode(settings: EncodeSettings, codec_fingerprint: str, codec_description: dict, out: str) -> EncodePlan:
    """Read (or start) the manifest at ``out``; refuse one made with other settings."""
    tracks = list_tracks(settings.data_root, settings.split, settings.layout)
    if not tracks:
        raise ValueError(f"no tracks in {storage.join(settings.data_root, settings.split)}")
    key = settings.key(codec_fingerprint, dataset_fingerprint(settings.data_root, settings.split,
                                                               settings.layout, tracks))
    manifest = _read_manifest(out)
    if manifest is not None:
        if manifest.get("key") != key:
            raise ManifestMismatch(
                f"the latent cache at {out} was made with other settings "
                f"({_describe_mismatch(manifest.get('key', {}), key)}). Nothing was changed. Use another output "
                f"URI, or delete {out} to rebuild it.")
    else:
        manifest = {"key": key, "shards": {}, "complete": False, "codec": codec_description,
                    "data_root": settings.data_root}
    shards = [tracks[i:i + settings.tracks_per_shard] for i in range(0, len(tracks), settings.tracks_per_shard)]
    manifest["planned_shards"] = len(shards)
    skipped = SkipReport()
    previous = storage.join(out, SKIPPED)
    if storage.exists(previous) and manifest["shards"]:
        old = json.loads(storage.read_text(previous))
        skipped.tracks = list(old.get("tracks", []))
        skipped.dropped_silent_chunks = int(old.get("dropped_silent_chunks", 0))
    plan = EncodePlan(settings, out, manifest, shards, skipped)
    remove_orphaned_temp_files(out)
    plan.damaged = plan.drop_damaged()
    return plan


def remove_orphaned_temp_files(out: str) -> list[str]:
    """Delete the temporary files a killed run left in a local cache folder (``storage.write_bytes`` writes
    ``.tmp-*`` beside its target, then renames). Encode runs on one output do not run at once (the manifest is one
    file), so any such file belongs to a run that is gone. S3 writes leave no such files."""
    if storage.is_remote(out) or not os.path.isdir(out):
        return []
    removed = []
    for name in os.listdir(out):
        if name.startswith(".tmp-"):
            os.unlink(os.path.join(out, name))
            removed.append(name)
    return removed


def write_shard(settings: EncodeSettings, codec: LatentCodec, out: str, index: int, tracks: list[str]
                ) -> tuple[str, dict, SkipReport]:
    """Encode one planned shard and write it atomically; returns ``(name, manifest entry, skip report)``.
    Safe to run in parallel (Ray tasks): it touches only its own shard file."""
    payload, report = encode_shard(settings, tracks, codec)
    data = _save_tensors(payload)
    name = shard_name(index)
    storage.write_bytes(storage.join(out, name), data)
    entry = {"chunks": len(payload["tracks"]), "tracks": len(tracks), "sha256": _sha256(data), "bytes": len(data)}
    return name, entry, report


def record_shard(plan: EncodePlan, index: int, name: str, entry: dict, report: SkipReport) -> None:
    """Add a written shard to the manifest (rewritten atomically after every shard: a kill loses nothing)."""
    tracks = set(plan.shards[index])
    plan.skipped.tracks = [t for t in plan.skipped.tracks if t["track"].split("/", 1)[-1] not in tracks]
    plan.skipped.merge(report)
    # each shard carries its own count of dropped chunks, and the total is their sum: re-encoding a shard replaces
    # its count instead of adding it a second time
    entry = {**entry, "dropped_silent_chunks": report.dropped_silent_chunks}
    plan.manifest["shards"][name] = entry
    plan.skipped.dropped_silent_chunks = sum(int(e.get("dropped_silent_chunks", 0))
                                             for e in plan.manifest["shards"].values())
    storage.write_text(storage.join(plan.out, SKIPPED), json.dumps(plan.skipped.to_dict(), indent=1))
    storage.write_text(storage.join(plan.out, MANIFEST), json.dumps(plan.manifest, indent=1))


def finalize_encode(plan: EncodePlan) -> dict:
    """Once every shard is written: latent statistics, counts, ``complete: true``."""
    missing = plan.pending()
    if missing:
        raise ValueError(f"cannot finalise {plan.out}: shards {missing[:5]} are not written yet")
    cache = LatentCache(plan.out, manifest=plan.manifest, verify=False)
    if cache.num_chunks == 0:
        raise ValueError(f"no usable chunks in {plan.settings.data_root}/{plan.settings.split}: "
                         f"{plan.skipped.summary()}")
    manifest = plan.manifest
    manifest["stats"] = LatentStats.from_latents(cache.iter_mixture_latents()).to_dict()
    manifest["num_chunks"] = cache.num_chunks
    manifest["frames_per_chunk"] = cache.frames_per_chunk
    manifest["complete"] = True
    manifest["skipped"] = {k: v for k, v in plan.skipped.to_dict().items() if k != "tracks"}
    storage.write_text(storage.join(plan.out, SKIPPED), json.dumps(plan.skipped.to_dict(), indent=1))
    storage.write_text(storage.join(plan.out, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def encode_split(settings: EncodeSettings, codec: LatentCodec, out: str, progress: bool = True,
                 log: Callable[[str], None] = print, stop_after_shards: int | None = None) -> dict:
    """Encode one split into ``out`` in this process (resumable, idempotent). Returns the manifest.

    ``stop_after_shards`` stops after writing that many new shards (tests use it to interrupt a run).
    The Ray job runs the same steps with shards in parallel tasks.
    """
    from tqdm import tqdm

    started = time.monotonic()
    plan = plan_encode(settings, codec.fingerprint, codec.describe(), out)
    if plan.damaged:
        log(f"[encode] {settings.split}: {plan.repair_note()}")
    pending = plan.pending()
    bar = tqdm(total=len(plan.shards), initial=len(plan.shards) - len(pending), desc=f"encode {settings.split}",
               unit="shard", disable=not progress)
    for written, index in enumerate(pending):
        if stop_after_shards is not None and written >= stop_after_shards:
            bar.close()
            return plan.manifest
        name, entry, report = write_shard(settings, codec, out, index, plan.shards[index])
        record_shard(plan, index, name, entry, report)
        bar.update(1)
    bar.close()
    manifest = finalize_encode(plan)
    log(f"[encode] {settings.split}: {manifest['num_chunks']} chunks in {len(plan.shards)} shard(s) at {out} "
        f"({len(pending)} new, {time.monotonic() - started:.1f} s); {plan.skipped.summary()}")
    return manifest


def resolve_cache(uri: str, split: str) -> str:
    """``uri`` itself when it holds a manifest, else ``uri/<split>``."""
    if storage.exists(storage.join(uri, "manifest.json")):
        return uri
    nested = storage.join(uri, split)
    if storage.exists(storage.join(nested, "manifest.json")):
        return nested
    raise ValueError(f"no latent cache for split {split!r} at {uri} (looked for {uri}/manifest.json and "
                     f"{nested}/manifest.json); create it with `ucr data encode --split {split} --out ...`")


class LatentCache:
    """Read access to a finished cache: shard loading with a bounded LRU, deterministic batch sampling.

    ``max_shards_in_memory`` bounds memory when streaming from S3; shards are verified against their checksum.
    """

    def __init__(self, uri: str, manifest: dict | None = None, max_shards_in_memory: int = 64,
                 verify: bool = True) -> None:
        self.uri = uri
        self.manifest = manifest if manifest is not None else _read_manifest(uri)
        if self.manifest is None:
            raise ValueError(f"no latent cache at {uri} (no {MANIFEST}); create it with `ucr data encode`")
        if verify and not self.manifest.get("complete"):
            raise ValueError(f"the latent cache at {uri} is incomplete (an encode run was interrupted); rerun "
                             f"`ucr data encode` with the same arguments to finish it")
        self.shard_names = sorted(self.manifest["shards"])
        self.shard_sizes = [self.manifest["shards"][name]["chunks"] for name in self.shard_names]
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)]).astype(int)
        self.max_shards_in_memory = max(1, max_shards_in_memory)
        self.verify = verify
        self._loaded: OrderedDict[str, dict] = OrderedDict()

    # -- facts -------------------------------------------------------------------------------------------------------
    @property
    def key(self) -> dict:
        return self.manifest["key"]

    def require_codec(self, fingerprint: str, user: str) -> None:
        """Refuse latents of another codec: ``user`` names what works in ``fingerprint``'s latent (a model)."""
        if self.key["codec"] != fingerprint:
            raise ValueError(f"the cache at {self.uri} holds latents of codec {self.key['codec']}, but {user} works in "
                             f"{fingerprint}; pass a cache encoded with that codec (ucr data encode with the model's "
                             f"codec settings)")

    @property
    def num_chunks(self) -> int:
        return int(self.offsets[-1])

    @property
    def channels(self) -> int:
        return int(self.manifest["codec"]["channels"])

    @property
    def frames_per_chunk(self) -> int:
        for name, size in zip(self.shard_names, self.shard_sizes):
            if size:
                return int(self.shard(name)["mixture"].shape[-1])
        return 0

    @property
    def stats(self) -> LatentStats | None:
        return LatentStats.from_dict(self.manifest["stats"]) if "stats" in self.manifest else None

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.key["sources"])

    @property
    def has_stems(self) -> bool:
        return bool(self.key["with_stems"])

    # -- loading -----------------------------------------------------------------------------------------------------
    def shard(self, name: str) -> dict:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        data = storage.read_bytes(storage.join(self.uri, name))
        if self.verify and _sha256(data) != self.manifest["shards"][name]["sha256"]:
            raise ValueError(f"{storage.join(self.uri, name)} does not match its checksum in the manifest; "
                             f"delete the shard and rerun `ucr data encode` to rewrite it")
        payload = _load_tensors(data)
        self._loaded[name] = payload
        while len(self._loaded) > self.max_shards_in_memory:
            self._loaded.popitem(last=False)
        return payload

    def _locate(self, index: int) -> tuple[str, int]:
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.shard_names[shard], index - int(self.offsets[shard])

    def item(self, index: int) -> dict:
        """One chunk: ``mixture [C, T]`` and, with stems, ``stems [S, C, T]``, ``stem_waves [S, L]``,
        ``mixture_wave [L]``; plus ``track`` and ``start``."""
        if not 0 <= index < self.num_chunks:
            raise IndexError(f"chunk {index} out of range (cache has {self.num_chunks})")
        name, local = self._locate(index)
        payload = self.shard(name)
        out = {key: value[local] for key, value in payload.items() if isinstance(value, torch.Tensor)}
        out["track"], out["start"] = payload["tracks"][local], payload["starts"][local]
        return out

    def iter_mixture_latents(self) -> Iterator[torch.Tensor]:
        for name in self.shard_names:
            mixture = self.shard(name)["mixture"]
            if len(mixture):
                yield mixture

    # -- deterministic sampling -------------------------------------------------------------------------------------
    def sample_batch(self, step: int, batch_size: int, crop_frames: int, seed: int = 0,
                     key: str | tuple[str, ...] = "mixture", shard_window: int | None = None,
                     steps_per_window: int = 200) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Random crops for optimiser step ``step``: a pure function of ``(seed, step)``, so resuming from a
        checkpoint at any step replays the same data. Returns ``[B, C, crop]`` (``key="mixture"``) or
        ``[B, S, C, crop]`` (``key="stems"``); a tuple of keys gives a tuple of such tensors (same chunks and crops).

        With ``shard_window`` (streaming from object storage), only that many shards are active at a time; the
        window moves every ``steps_per_window`` steps along a seeded permutation of the shards.
        """
        if self.num_chunks == 0:
            raise ValueError(f"the latent cache at {self.uri} holds no chunks")
        frames = self.frames_per_chunk
        if crop_frames > frames:
            raise ValueError(f"crop of {crop_frames} frames is longer than the cached chunks ({frames} frames)")
        generator = np.random.default_rng([seed, step])
        if shard_window is None or shard_window >= len(self.shard_names):
            indices = generator.integers(0, self.num_chunks, size=batch_size)
        else:
            window = step // steps_per_window
            order = np.random.default_rng([seed, 10**9 + window // math.ceil(len(self.shard_names) / shard_window)]
                                          ).permutation(len(self.shard_names))
            start = (window * shard_window) % len(self.shard_names)
            active = [order[(start + i) % len(order)] for i in range(shard_window)]
            pool = np.concatenate([np.arange(self.offsets[s], self.offsets[s + 1]) for s in active])
            if len(pool) == 0:
                pool = np.arange(self.num_chunks)
            indices = pool[generator.integers(0, len(pool), size=batch_size)]
        offsets = generator.integers(0, frames - crop_frames + 1, size=batch_size)
        keys = (key,) if isinstance(key, str) else tuple(key)
        items = [self.item(int(i)) for i in indices]
        if keys[0] not in items[0]:
            raise ValueError(f"the latent cache at {self.uri} has no {keys[0]!r}; encode with --with-stems")
        batches = tuple(torch.stack([item[k][..., o:o + crop_frames] for item, o in zip(items, offsets)])
                        for k in keys)
        return batches[0] if isinstance(key, str) else batches
