"""The one place that understands storage URIs.

Accepted forms: plain paths (``/data/raw``, ``raw/``), ``file://``, ``s3://bucket/prefix`` (s3fs; the endpoint comes from
the standard AWS settings, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, so MinIO, SeaweedFS and R2 work) and
``gs://`` when gcsfs is installed. Everything else in vmr builds locations with :func:`join`, never by string concatenation.

Atomicity: :func:`write_bytes_atomic` never leaves a half-written object under its final name. On a local disk it writes
a temporary file in the same folder and renames it; on S3/GCS a single PUT (or a multipart upload) only becomes visible
when it completes, so the final key is written directly.
"""
from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import tempfile
import uuid
from dataclasses import dataclass
from typing import Iterable

import fsspec

from vmr.errors import InputError, ServiceUnavailable

_REMOTE = ("s3", "gs", "gcs")
# what botocore/aiobotocore/aiohttp raise when nothing answers at the endpoint (matched by name: no import of them)
_CONNECTION_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError",
                      "ServerDisconnectedError", "ProxyConnectionError")


def _is_unreachable(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _CONNECTION_ERRORS:
            return True
        e = e.__cause__ or e.__context__
    return False


def endpoint_of(uri: str) -> str:
    """Where ``uri``'s object store is, for messages: the configured S3 endpoint or the scheme's default."""
    s = scheme(uri)
    if s == "s3":
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    return "Google Cloud Storage" if s == "gs" else "the local disk"


@contextlib.contextmanager
def _reaching(uri: str):
    """Turns "nothing answers at the object store endpoint" into :class:`ServiceUnavailable` naming it."""
    try:
        yield
    except (InputError, FileNotFoundError):
        raise
    except Exception as e:
        if not is_remote(uri) or not _is_unreachable(e):
            raise
        detail = " ".join(str(e).split())[:160]
        raise ServiceUnavailable(f"cannot reach the object store at {endpoint_of(uri)} for {uri} ({detail}); check "
                                 "the endpoint (AWS_ENDPOINT_URL) and the network, then run the command again") from None


def _reaches(fn):
    """Decorator: :func:`_reaching` the function's first argument (a URI)."""
    @functools.wraps(fn)
    def wrapper(uri, *args, **kwargs):
        with _reaching(str(uri)):
            return fn(uri, *args, **kwargs)
    return wrapper


def scheme(uri: str) -> str:
    """``"s3"``, ``"gs"`` or ``"file"`` for a URI or plain path."""
    if "://" in uri:
        s = uri.split("://", 1)[0].lower()
        return "gs" if s == "gcs" else s
    return "file"


def is_remote(uri: str) -> bool:
    return scheme(uri) in _REMOTE


def _s3_options() -> dict:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    opts: dict = {}
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


def filesystem(uri: str) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for ``uri`` (cached by fsspec per set of options)."""
    s = scheme(uri)
    if s == "file":
        return fsspec.filesystem("file")
    if s == "s3":
        return fsspec.filesystem("s3", **_s3_options())
    if s == "gs":
        try:
            return fsspec.filesystem("gcs")
        except ImportError as e:  # pragma: no cover - depends on optional gcsfs
            raise InputError("gs:// URIs need gcsfs: pip install 'vmr[gcs]'") from e
    raise InputError(f"unsupported storage scheme {s!r} in {uri!r} (use a path, file://, s3:// or gs://)")


def strip(uri: str) -> str:
    """The path part that the filesystem understands (``bucket/key`` for S3, an absolute path locally)."""
    s = scheme(uri)
    if s == "file":
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return os.path.abspath(os.path.expanduser(path))
    return uri.split("://", 1)[1]


def normalize(uri: str) -> str:
    """A canonical form: absolute local paths, ``s3://bucket/key`` without a trailing slash."""
    s = scheme(uri)
    if s == "file":
        return strip(uri)
    return f"{s}://{strip(uri).rstrip('/')}"


def join(base: str, *parts: str) -> str:
    """Join path components under ``base`` (a URI or a path)."""
    s = scheme(base)
    if s == "file":
        return os.path.join(strip(base), *parts)
    return f"{s}://" + posixpath.join(strip(base).rstrip("/"), *parts)


def parent(uri: str) -> str:
    """The folder holding ``uri`` (a URI or path), in the same form: ``s3://b/a`` for ``s3://b/a/x.csv``."""
    s = scheme(uri)
    if s == "file":
        return os.path.dirname(strip(uri))
    return f"{s}://" + posixpath.dirname(strip(uri).rstrip("/"))


def relative(uri: str, base: str) -> str:
    """``uri``'s path below ``base``, with forward slashes (``match1.mp4`` for ``s3://raw/match1.mp4`` under ``s3://raw``)."""
    a, b = strip(uri), strip(base).rstrip("/")
    if scheme(uri) == "file":
        return os.path.relpath(a, b).replace(os.sep, "/")
    if not a.startswith(b + "/"):
        raise ValueError(f"{uri} is not under {base}")
    return a[len(b) + 1:]


@_reaches
def exists(uri: str) -> bool:
    return filesystem(uri).exists(strip(uri))


def makedirs(uri: str) -> None:
    """Create a local folder (object stores have no folders; nothing to do there)."""
    if scheme(uri) == "file":
        os.makedirs(strip(uri), exist_ok=True)


def open_uri(uri: str, mode: str = "rb", **kwargs):
    """Open a file-like object; for writes prefer :func:`write_bytes_atomic`."""
    return filesystem(uri).open(strip(uri), mode, **kwargs)


@_reaches
def read_bytes(uri: str) -> bytes:
    return filesystem(uri).cat_file(strip(uri))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def _umask() -> int:
    """The process's umask, read without changing it where the OS tells (Linux: ``/proc/self/status``); elsewhere
    set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@_reaches
def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` so that ``uri`` holds either its old content or all of ``data``, never a part. A local file
    gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not ``mkstemp``'s 0600."""
    if scheme(uri) == "file":
        path = strip(uri)
        tmp = _complete_temp_file(path, data, f".{uuid.uuid4().hex[:6]}.tmp")
        try:
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        filesystem(uri).pipe_file(strip(uri), data)


def _complete_temp_file(path: str, data: bytes, suffix: str) -> str:
    """A hidden temporary file beside local ``path`` holding ``data``, flushed to disk, mode 0666 less the umask (what
    ``open`` would give; ``mkstemp`` alone makes it 0600); its path. The caller renames or links it into place."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def write_text_atomic(uri: str, text: str) -> None:
    write_bytes_atomic(uri, text.encode("utf-8"))


@_reaches
def create_bytes(uri: str, data: bytes) -> bool:
    """Write ``data`` to ``uri`` only if nothing is there yet, atomically: True when this call created it, False when
    it existed (whoever wrote it first wins, however many processes race). Local files: a complete temporary file
    hard-linked to the name (``link`` fails on an existing name, like ``O_EXCL``); S3: a PUT with
    ``If-None-Match: *`` (s3fs ``mode="create"``), which the server refuses when the key exists."""
    if scheme(uri) == "file":
        path = strip(uri)
        tmp = _complete_temp_file(path, data, ".new")
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)
    fs = filesystem(uri)
    if scheme(uri) != "s3":  # pragma: no cover - gcsfs has no conditional create through fsspec
        if fs.exists(strip(uri)):
            return False
        fs.pipe_file(strip(uri), data)
        return True
    try:
        fs.pipe_file(strip(uri), data, mode="create")
    except FileExistsError:
        return False
    except OSError:  # 412 Precondition Failed that s3fs did not recognise as the If-None-Match condition
        if fs.exists(strip(uri)):
            return False
        raise
    return True


@_reaches
def remove(uri: str) -> None:
    fs = filesystem(uri)
    p = strip(uri)
    if fs.exists(p):
        fs.rm(p, recursive=True)


@dataclass(frozen=True)
class FileInfo:
    """One listed object: its URI, size in bytes and a change tag (S3 ETag, or mtime for local files)."""

    uri: str
    size: int
    etag: str


def _etag(info: dict) -> str:
    for k in ("ETag", "etag", "md5Hash", "crc32c"):
        if info.get(k):
            return str(info[k]).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return f"mtime-{mtime}"


@_reaches
def info(uri: str) -> FileInfo:
    fs = filesystem(uri)
    try:
        i = fs.info(strip(uri))
    except FileNotFoundError as e:
        raise InputError(f"not found: {uri}") from e
    return FileInfo(uri=normalize(uri), size=int(i.get("size") or 0), etag=_etag(i))


@_reaches
def list_files(base: str, extensions: Iterable[str] | None = None) -> list[FileInfo]:
    """Every file under ``base`` (recursively), sorted by URI, optionally only those with the given extensions
    (compared case-insensitively, with the dot: ``{".mp4", ".mkv"}``). A ``base`` that is itself a file lists just it."""
    fs = filesystem(base)
    root = strip(base)
    exts = {e.lower() for e in extensions} if extensions is not None else None
    if not fs.exists(root):
        raise InputError(f"not found: {base}")
    if fs.isfile(root):
        found = {root: fs.info(root)}
    else:
        found = fs.find(root, detail=True)
    s = scheme(base)
    out = []
    for path, i in sorted(found.items()):
        if i.get("type") == "directory":
            continue
        name = posixpath.basename(path)
        if name.startswith("."):
            continue
        if exts is not None and os.path.splitext(name)[1].lower() not in exts:
            continue
        uri = path if s == "file" else f"{s}://{path}"
        out.append(FileInfo(uri=uri, size=int(i.get("size") or 0), etag=_etag(i)))
    return out


@_reaches
def local_copy(uri: str, folder: str | None = None) -> str:
    """A local path holding ``uri``'s bytes: the path itself for local files, else a download streamed to ``folder``
    (a temporary folder by default; the caller removes it). Never holds the whole object in memory."""
    if scheme(uri) == "file":
        return strip(uri)
    folder = folder or tempfile.mkdtemp(prefix="vmr-")
    dest = os.path.join(folder, posixpath.basename(strip(uri)))
    filesystem(uri).get_file(strip(uri), dest)
    return dest
