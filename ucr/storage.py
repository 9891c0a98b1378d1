"""One way to read and write local paths and ``s3://`` URIs (fsspec / s3fs).

Credentials and the endpoint come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``) plus ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for a non-AWS endpoint (MinIO, moto).
Writes are atomic: a local file is written beside its target and renamed; an S3 object becomes visible only when its
single PUT (or multipart upload) completes, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import fsspec


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def absolute(uri: str) -> str:
    """A local path made absolute (processes on other working directories, e.g. Ray workers, read it); a remote
    URI unchanged."""
    if is_remote(uri) or str(uri).startswith("file://"):
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def _s3_options() -> dict:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options: dict = {}
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path inside it."""
    uri = str(uri)
    if uri.startswith("s3://"):
        fs = fsspec.filesystem("s3", **_s3_options())
        return fs, uri[len("s3://"):]
    if is_remote(uri):
        fs, path = fsspec.core.url_to_fs(uri)
        return fs, path
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    return fsspec.filesystem("file"), str(Path(local).expanduser().absolute())


def join(uri: str, *parts: str) -> str:
    uri = str(uri)
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return str(Path(uri, *parts))


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def isdir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def listdir(uri: str) -> list[str]:
    """Names (not paths) directly under ``uri``, sorted; empty when it does not exist."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    fs.invalidate_cache(path)
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_remote(uri):
        fs.makedirs(path, exist_ok=True)
    # object stores have no folders: nothing to make


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        return handle.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``os.umask`` alone can only be read by
    setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically write ``data`` to ``uri`` (temp file + rename locally; one PUT on S3). A local file gets the usual
    mode of a new file (0666 less the umask), not the temp file's 0600."""
    fs, path = filesystem(uri)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask: 0644 usually)
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


@contextmanager
def atomic_writer(uri: str) -> Iterator[io.BytesIO]:
    """``with atomic_writer(uri) as f: f.write(...)`` — nothing appears at ``uri`` unless the block completes."""
    buffer = io.BytesIO()
    yield buffer
    write_bytes(uri, buffer.getvalue())


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def cache_root() -> str:
    """This user's cache folder for downloads: ``$UCR_CACHE``, else ``$XDG_CACHE_HOME/ucr``, else ``~/.cache/ucr``
    (the convention Hugging Face and pip follow). Created 0700; refused if another user owns it."""
    root = os.environ.get("UCR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ucr")
    os.makedirs(root, mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and os.stat(root).st_uid != os.getuid():
        raise ValueError(f"the download cache {root} belongs to another user; set UCR_CACHE to a folder of "
                              f"your own")
    return root


_MANIFEST = ".ucr-download.json"


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remote_listing(fs, path: str) -> dict[str, int]:
    """``{relative path: size}`` of every file under a remote folder."""
    base = path.rstrip("/") + "/"
    return {name[len(base):]: int(info.get("size") or 0)
            for name, info in fs.find(base, detail=True).items() if info.get("type", "file") == "file"}


def _cache_is_valid(target: str, uri: str, remote: dict[str, int]) -> bool:
    """The cached copy was completed for ``uri``, the remote still lists the same files at the same sizes, and every
    local file still has the size and SHA-256 it had when it was downloaded."""
    try:
        manifest = json.loads(Path(target, _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("files") or {}
    if manifest.get("uri") != uri or {name: entry.get("size") for name, entry in files.items()} != remote:
        return False
    for name, entry in files.items():
        local = os.path.join(target, name)
        if not os.path.isfile(local) or os.path.getsize(local) != entry["size"] or _sha256(local) != entry["sha256"]:
            return False
    return True


def download_folder(uri: str, local_dir: str | None = None) -> str:
    """Copy a remote folder to a local one and return its path; local paths pass through.

    The copy lives in this user's cache (:func:`cache_root`, one folder per URI) unless ``local_dir`` is given. It is
    reused only while it verifies: the remote lists the same files at the same sizes, and each local file has the
    SHA-256 recorded when it was downloaded; otherwise it is downloaded again (into a fresh folder, then swapped in).
    """
    if not is_remote(uri):
        return filesystem(uri)[1]
    fs, path = filesystem(uri)
    target = local_dir or os.path.join(cache_root(), "downloads", uuid.uuid5(uuid.NAMESPACE_URL, uri).hex)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri} does not exist")
    remote = _remote_listing(fs, path)
    if _cache_is_valid(target, uri, remote):
        return target
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        fs.get(path.rstrip("/") + "/", fresh + "/", recursive=True)
        files = {}
        for name, size in remote.items():
            local = os.path.join(fresh, name)
            if not os.path.isfile(local) or os.path.getsize(local) != size:
                raise OSError(f"downloading {uri}: {name} arrived incomplete")
            files[name] = {"size": size, "sha256": _sha256(local)}
        Path(fresh, _MANIFEST).write_text(json.dumps({"uri": uri, "files": files}, indent=1))
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(fresh, target)
    finally:
        if os.path.exists(fresh):
            shutil.rmtree(fresh, ignore_errors=True)
    return target
