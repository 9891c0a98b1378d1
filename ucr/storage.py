"""One way to read and write local paths and ``s3://`` URIs (fsspec / s3fs).

Credentials and the endpoint come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``) plus ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for a non-AWS endpoint (MinIO, moto).
Writes are atomic: a local file is written beside its target and renamed; an S3 object becomes visible only when its
single PUT (or multipart upload) completes, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import os
import posixpath
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

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


def open_read(uri: str) -> IO[bytes]:
    """A binary file object (seekable; streamed in blocks from S3)."""
    fs, path = filesystem(uri)
    return fs.open(path, "rb")


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically write ``data`` to ``uri`` (temp file + rename locally; one PUT on S3)."""
    fs, path = filesystem(uri)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
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


def download_folder(uri: str, local_dir: str | None = None) -> str:
    """Copy a remote folder to a local one (cached by URI) and return its path; local paths pass through."""
    if not is_remote(uri):
        return filesystem(uri)[1]
    fs, path = filesystem(uri)
    target = local_dir or os.path.join(tempfile.gettempdir(), "ucr-download",
                                       uuid.uuid5(uuid.NAMESPACE_URL, uri).hex)
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        if not fs.exists(path):
            raise FileNotFoundError(f"{uri} does not exist")
        os.makedirs(target, exist_ok=True)
        fs.get(path.rstrip("/") + "/", target, recursive=True)
        Path(marker).touch()
    return target
