"""The index file: the serialized FAISS index first (so FAISS can memory-map it in place), the
sorted ids (int64 LE), a JSON header, and a trailer (header length, header sha256, magic).
The header records both sections' lengths and sha256, so a truncated or garbled file is
detected before FAISS parses a byte of it."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import faiss

from .kinds import index_kind_names
from .locks import fsync_dir

FILE_MAGIC = b"DESOMFX2"
FORMAT_VERSION = 2
# The trailer closing a file: header length, sha256 of the header, magic. The FAISS index comes
# first in the file, so FAISS can memory-map it in place (see VectorIndex.load).
TRAILER_STRUCT = struct.Struct("<Q32s8s")
# FAISS flags of a memory-mapped load: the vectors (flat codes, IVF lists) stay in the file's
# pages, shared by every process that maps the same file, and are never written.
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


class IndexFileError(Exception):
    """Base class of the errors raised when an index file cannot be used."""


class IndexCorruptError(IndexFileError):
    """The file is truncated, garbled or not an index file at all."""


class IndexStaleError(IndexFileError):
    """The file is intact but describes another model version, kind or set of exposures."""



def read_index_file(path: Path, *, check_payload: bool = True):
    """(header, mapping, ids section, FAISS section) of a verified index file; the sections
    are memoryviews of a read-only mmap of the file (nothing is copied). ``check_payload=False``
    skips the sections' sha256 (which reads every page of the file) for a file this process has
    just written and synced; the header, its checksum and the sections' lengths are still checked."""
    import mmap as _mmap

    with open(path, "rb") as fh:   # FileNotFoundError propagates: missing is not corrupt
        size = os.fstat(fh.fileno()).st_size
        if size < TRAILER_STRUCT.size:
            raise IndexCorruptError(f"{path}: {size} bytes, too short to be an index file")
        mapping = _mmap.mmap(fh.fileno(), 0, access=_mmap.ACCESS_READ)
    data = memoryview(mapping)
    header_len, header_digest, magic = TRAILER_STRUCT.unpack_from(data, size - TRAILER_STRUCT.size)
    if magic != FILE_MAGIC:
        if bytes(data[:8]) == b"DESOMFX1":
            raise IndexStaleError(f"{path}: file format 1 (before memory mapping); it is rebuilt")
        raise IndexCorruptError(f"{path}: not a recommender index file (bad magic {magic!r})")
    header_start = size - TRAILER_STRUCT.size - header_len
    if header_start < 0:
        raise IndexCorruptError(f"{path}: truncated header ({header_len} bytes announced)")
    header = bytes(data[header_start:header_start + header_len])
    if hashlib.sha256(header).digest() != header_digest:
        raise IndexCorruptError(f"{path}: header checksum mismatch (truncated or garbled file)")
    try:
        meta = json.loads(header.decode("utf-8"))
        ids_len, index_len = int(meta["ids_bytes"]), int(meta["index_bytes"])
        for key in ("format", "dim", "count", "approximate_threshold", "nprobe", "trained_size"):
            meta[key] = int(meta[key])
        for key in ("kind", "transform", "model_version", "ids_sha256", "ids_payload_sha256",
                    "index_payload_sha256", "created_at"):
            if not isinstance(meta[key], str):
                raise TypeError(f"{key} is not a string")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(f"{path}: unreadable header ({exc})") from exc
    if meta["format"] != FORMAT_VERSION:
        raise IndexStaleError(f"{path}: file format {meta['format']}, this code reads {FORMAT_VERSION}")
    if meta["kind"] not in index_kind_names():
        raise IndexCorruptError(f"{path}: unknown index kind {meta['kind']!r}")
    if index_len + ids_len != header_start:
        raise IndexCorruptError(f"{path}: {size} bytes, the header announces "
                                f"{index_len + ids_len + header_len + TRAILER_STRUCT.size} (truncated or appended to)")
    payload_index = data[:index_len]
    payload_ids = data[index_len:index_len + ids_len]
    if not check_payload:
        return meta, mapping, payload_ids, payload_index
    if hashlib.sha256(payload_ids).hexdigest() != meta["ids_payload_sha256"]:
        raise IndexCorruptError(f"{path}: ids section checksum mismatch (garbled file)")
    if hashlib.sha256(payload_index).hexdigest() != meta["index_payload_sha256"]:
        raise IndexCorruptError(f"{path}: FAISS section checksum mismatch (garbled file)")
    return meta, mapping, payload_ids, payload_index



def write_index_file(path, faiss_index, payload_ids: bytes, meta: dict) -> Path:
    """Write one index file atomically: a temporary file renamed over the old one (a process
    that mapped the old file keeps reading it unharmed). ``meta`` is the index's metadata; the
    sections' lengths and checksums and the time of saving are added to it here. FAISS writes
    the index straight into the file (hashed on the way), so saving never holds a second copy
    of the index in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            index_digest, index_bytes = hashlib.sha256(), 0

            def sink(block: bytes) -> int:
                nonlocal index_bytes
                fh.write(block)
                index_digest.update(block)
                index_bytes += len(block)
                return len(block)

            writer = faiss.PyCallbackIOWriter(sink)
            faiss.write_index(faiss_index, writer)
            del writer                      # flushes its last buffered block into the file
            meta.update({
                "ids_bytes": len(payload_ids),
                "index_bytes": index_bytes,
                "ids_payload_sha256": hashlib.sha256(payload_ids).hexdigest(),
                "index_payload_sha256": index_digest.hexdigest(),
                "saved_at": now(),
            })
            header = json.dumps(meta, sort_keys=True).encode("utf-8")
            fh.write(payload_ids)
            fh.write(header)
            fh.write(TRAILER_STRUCT.pack(len(header), hashlib.sha256(header).digest(), FILE_MAGIC))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def now() -> str:
    """The time stamps of index files: UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
