"""DESOM-1 training sets: sampled with bounded memory, kept on disk, read back in batches.

Sampling. Every cutout that an exposure yields gets a random key, a pure function of
(seed, the exposure's index in the file list, the cutout's position in that exposure's sample).
The training set is the ``k`` cutouts with the smallest keys (ties broken by exposure, then
position): a uniform sample without replacement, and the same set whatever the number of
workers or the order in which their results arrive. ``BottomKSample`` keeps only the current
``k`` best plus a bounded buffer, so the driver never holds more than the training set and one
batch of results; a worker given the driver's current threshold (the k-th smallest key so far,
which can only fall) returns only the cutouts that can still make it in.

On disk. A set is a directory:

    cutouts.npy   (N, S, S) uint16: a cutout's values in [0, 1] times 65 535, rounded (half the
                  bytes of float32; the step, 1.5e-5, is far below any stamp's noise; NaN cannot be
                  stored, so the set needs no finiteness scan)
    rows.npy      (N, 2) int32: each row's exposure (index into ``exposures``) and position
    set.json      what made it: exposures, seed, cutouts per CCD, the cap, the stamp recipe,
                  the imaging settings, failures; written last, so a set without it is incomplete

``DiskRows`` reads rows with positioned reads (``os.preadv``), never through a memory map: the
pages a long training run touches stay in the page cache and are not counted against the
process, so a 1M-cutout set trains in the memory of one batch.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SET_FORMAT = "desom-training-set"
SET_VERSION = 1
CUTOUTS_FILE = "cutouts.npy"
ROWS_FILE = "rows.npy"
META_FILE = "set.json"
UNIT_SCALE = 65535          # uint16 code of 1.0
NO_THRESHOLD = np.iinfo(np.uint64).max
_KEY_STREAM = 0x5EED        # keeps the keys' random stream apart from every other use of the seed


class TrainingSetError(ValueError):
    """A training set cannot be written or read; the message says which and why."""


# --- keys and the bounded sample -------------------------------------------------------------

def cutout_keys(seed: int, source: int, n: int) -> np.ndarray:
    """(n,) uint64 keys of the first n cutouts of exposure ``source`` (prefix-stable: the first
    m keys do not depend on n)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(source), _KEY_STREAM]))
    return rng.integers(0, NO_THRESHOLD, size=int(n), dtype=np.uint64, endpoint=True)


def encode_unit(values) -> np.ndarray:
    """float values in [0, 1] -> uint16 codes; anything else is refused with its count."""
    values = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if bad.any():
        raise TrainingSetError(f"{int(bad.sum())} cutout values are NaN, infinite or outside [0, 1]; "
                               "a training set stores normalised cutouts only")
    return np.rint(values * np.float32(UNIT_SCALE)).astype(np.uint16)


def decode_unit(codes: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * np.float32(1.0 / UNIT_SCALE)


@dataclass
class Offer:
    """What one exposure contributes: the kept cutouts (uint16 codes), their positions in the
    exposure's sample, their keys, and how many cutouts the exposure yielded in all."""
    positions: np.ndarray
    keys: np.ndarray
    codes: np.ndarray
    n_total: int


def select_offer(cutouts: np.ndarray, *, seed: int, source: int, threshold: int = NO_THRESHOLD) -> Offer:
    """The cutouts of one exposure whose keys are at most ``threshold`` (worker side)."""
    keys = cutout_keys(seed, source, len(cutouts))
    keep = np.flatnonzero(keys <= np.uint64(threshold))
    return Offer(positions=keep.astype(np.int32), keys=keys[keep],
                 codes=encode_unit(cutouts[keep]) if len(keep) else np.zeros((0,) + cutouts.shape[1:], np.uint16),
                 n_total=int(len(cutouts)))


class BottomKSample:
    """The k rows with the smallest (key, source, position) among everything offered, in memory
    bounded by k + ``buffer`` rows. k=None keeps every row (memory then grows with the input)."""

    def __init__(self, k: int | None, row_shape: tuple, buffer: int | None = None):
        if k is not None and k < 1:
            raise ValueError(f"k must be at least 1 (or None for all), got {k}")
        self.k = k
        self.row_shape = tuple(row_shape)
        self.buffer = buffer or (max(4096, min(k, 32768)) if k else 65536)
        self._cap = 0
        self.count = 0
        self.threshold = int(NO_THRESHOLD)
        self.offered = 0
        self._grow(min(self.buffer + (k or 0), 1 << 16))

    def _grow(self, capacity: int) -> None:
        def resized(old, shape, dtype):
            new = np.empty(shape, dtype)
            if old is not None:
                new[:self.count] = old[:self.count]
            return new
        self.keys = resized(getattr(self, "keys", None), (capacity,), np.uint64)
        self.sources = resized(getattr(self, "sources", None), (capacity,), np.int32)
        self.positions = resized(getattr(self, "positions", None), (capacity,), np.int32)
        self.codes = resized(getattr(self, "codes", None), (capacity,) + self.row_shape, np.uint16)
        self._cap = capacity

    @property
    def capacity_limit(self) -> int | None:
        return None if self.k is None else self.k + self.buffer

    def offer(self, source: int, offer: Offer) -> None:
        self.offered += offer.n_total
        keep = offer.keys <= np.uint64(self.threshold)
        positions, keys, codes = offer.positions[keep], offer.keys[keep], offer.codes[keep]
        start = 0
        while start < len(keys):
            limit = self.capacity_limit
            if limit is not None and self.count >= limit:
                self.compact()
                keep = keys[start:] <= np.uint64(self.threshold)
                positions, keys, codes = positions[start:][keep], keys[start:][keep], codes[start:][keep]
                start = 0
                continue
            room = (limit - self.count) if limit is not None else len(keys) - start
            take = min(room, len(keys) - start)
            if self.count + take > self._cap:
                self._grow(max(self.count + take, min(2 * self._cap, limit or 2 * self._cap)))
            end = self.count + take
            self.keys[self.count:end] = keys[start:start + take]
            self.sources[self.count:end] = source
            self.positions[self.count:end] = positions[start:start + take]
            self.codes[self.count:end] = codes[start:start + take]
            self.count, start = end, start + take

    def compact(self) -> None:
        """Keep the k best rows in slots [0, k); rows that stay do not move."""
        k, n = self.k, self.count
        if k is None or n <= k:
            return
        keys = self.keys[:n]
        kth = np.partition(keys, k - 1)[k - 1]
        below = np.flatnonzero(keys < kth)
        tied = np.flatnonzero(keys == kth)
        if len(below) + len(tied) > k:   # ties at the boundary: the earlier (source, position) wins
            tied = tied[np.lexsort((self.positions[tied], self.sources[tied]))][:k - len(below)]
        keep = np.concatenate([below, tied])
        stays = np.zeros(n, bool)
        stays[keep] = True
        holes = np.flatnonzero(~stays[:k])
        movers = np.flatnonzero(stays[k:]) + k
        for array in (self.keys, self.sources, self.positions, self.codes):
            array[holes] = array[movers]
        self.count = k
        self.threshold = int(kth)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, rows): the kept rows' slots in (source, position) order, and their
        (source, position) pairs in that order."""
        self.compact()
        n = self.count
        order = np.lexsort((self.positions[:n], self.sources[:n]))
        rows = np.stack([self.sources[:n][order], self.positions[:n][order]], axis=1).astype(np.int32)
        return order, rows


# --- the set on disk ---------------------------------------------------------------------------

def recipe_id(recipe: dict) -> str:
    """A short id of what makes a set (same recipe, same set)."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _empty_npy(path: Path, shape: tuple, dtype) -> int:
    """Create a .npy file of that shape (sparse, zero-filled) and return its data offset."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = int(array.offset)
    del array
    return offset


def write_training_set(directory, sample: BottomKSample, meta: dict, progress: bool = False) -> "TrainingSet":
    """Write the kept rows of ``sample`` in (exposure, position) order with their provenance."""
    directory = Path(directory)
    order, rows = sample.result()
    if not len(order):
        raise TrainingSetError("no cutouts to write")
    return write_rows(directory, lambda idx: sample.codes[idx], order, rows, meta, progress=progress)


def write_rows(directory, read_codes, order: np.ndarray, rows: np.ndarray, meta: dict,
               chunk: int = 32768, progress: bool = False) -> "TrainingSet":
    """Write ``read_codes(order[i:j])`` chunk by chunk into a new set at ``directory``; the
    sidecar (``meta`` plus the shape) is written last, and the directory appears whole (it is
    built next to its final place and renamed)."""
    from tqdm import tqdm

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise TrainingSetError(f"{directory} exists and is not empty; choose a new folder for the training set")
    directory.parent.mkdir(parents=True, exist_ok=True)
    # A write killed before its rename leaves a staging folder: clear those of this set first.
    for stale in directory.parent.glob(f".{directory.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        first = np.asarray(read_codes(order[:1]))
        shape = (len(order),) + first.shape[1:]
        offset = _empty_npy(staging / CUTOUTS_FILE, shape, np.uint16)
        row_bytes = int(np.prod(shape[1:])) * 2
        fd = os.open(staging / CUTOUTS_FILE, os.O_WRONLY)
        try:
            for start in tqdm(range(0, len(order), chunk), desc="writing training set", unit="chunk",
                              disable=not progress):
                codes = np.asarray(read_codes(order[start:start + chunk]))
                if codes.dtype != np.uint16:
                    raise TrainingSetError(f"training-set rows must be uint16 codes, got {codes.dtype}")
                _pwrite_all(fd, codes, offset + start * row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        np.save(staging / ROWS_FILE, np.asarray(rows, np.int32))
        full = {**meta, "format": SET_FORMAT, "format_version": SET_VERSION, "n_cutouts": int(shape[0]),
                "shape": list(shape), "dtype": "uint16", "encoding": f"value = code / {UNIT_SCALE}",
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
        (staging / META_FILE).write_text(json.dumps(full, indent=1))
        if directory.exists():
            directory.rmdir()
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_training_set(directory)


@dataclass
class TrainingSet:
    path: Path
    meta: dict
    rows: "DiskRows"
    provenance_path: Path = field(default=None)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def set_id(self) -> str | None:
        return self.meta.get("set_id")

    def provenance(self) -> np.ndarray:
        """(N, 2) int32: each row's exposure index and position (memory-mapped)."""
        return np.load(self.provenance_path, mmap_mode="r")


def is_training_set(path) -> bool:
    path = Path(path)
    return (path / META_FILE).is_file() and (path / CUTOUTS_FILE).is_file()


def open_training_set(path) -> TrainingSet:
    path = Path(path)
    if not path.is_dir():
        raise TrainingSetError(f"training set not found: {path} is not a folder")
    if not (path / META_FILE).is_file():
        raise TrainingSetError(f"{path} is not a complete training set (no {META_FILE}; an interrupted "
                               "write leaves none: sample it again)")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingSetError(f"{path / META_FILE} cannot be read: {exc}") from None
    if meta.get("format") != SET_FORMAT:
        raise TrainingSetError(f"{path} is not a DESOM training set (format {meta.get('format')!r})")
    if meta.get("format_version") != SET_VERSION:
        raise TrainingSetError(f"{path} has training-set format version {meta.get('format_version')!r}; "
                               f"this library reads version {SET_VERSION}")
    rows = DiskRows(path / CUTOUTS_FILE)
    if list(rows.shape) != list(meta.get("shape", [])):
        raise TrainingSetError(f"{path / CUTOUTS_FILE} holds shape {rows.shape}, its {META_FILE} says "
                               f"{meta.get('shape')}: the set is damaged")
    return TrainingSet(path=path, meta=meta, rows=rows, provenance_path=path / ROWS_FILE)


class DiskRows:
    """Rows of a .npy file on disk, read on demand with positioned reads and returned as float32.

    Quacks like the part of a numpy array that training uses: ``shape``, ``ndim``, ``dtype``,
    ``len()`` and indexing by an integer, a slice or an integer array (rows in the order asked,
    repeats allowed). uint16 files are decoded (code / 65 535); float files are cast.
    ``subset(indices)`` is a view on some rows, ``with_row_shape(shape)`` a view with the rows
    reshaped (same bytes)."""

    def __init__(self, path, *, index: np.ndarray | None = None, row_shape: tuple | None = None):
        self.path = Path(path)
        try:
            header = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise TrainingSetError(f"cannot read {self.path} as a .npy array: {exc}") from None
        if header.ndim < 2 or not header.flags.c_contiguous:
            raise TrainingSetError(f"{self.path}: expected a C-ordered (N, ...) array, got shape {header.shape}")
        self.file_dtype = header.dtype
        self.file_rows = int(header.shape[0])
        self.file_row_shape = tuple(header.shape[1:])
        self.offset = int(header.offset)
        del header
        self.row_bytes = int(np.prod(self.file_row_shape)) * self.file_dtype.itemsize
        self.index = None if index is None else np.asarray(index, np.int64)
        if self.index is not None and len(self.index) and (self.index.min() < 0 or self.index.max() >= self.file_rows):
            raise IndexError(f"row index out of range for {self.file_rows} rows")
        shape = tuple(row_shape) if row_shape is not None else self.file_row_shape
        if int(np.prod(shape)) != int(np.prod(self.file_row_shape)):
            raise ValueError(f"cannot view rows of shape {self.file_row_shape} as {shape}")
        self.row_shape = shape
        self._fd = None

    # numpy-like surface
    dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple:
        return (len(self),) + self.row_shape

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def finite_by_construction(self) -> bool:
        return self.file_dtype.kind in "ui"

    def __len__(self) -> int:
        return self.file_rows if self.index is None else len(self.index)

    def subset(self, indices) -> "DiskRows":
        indices = np.asarray(indices, np.int64)
        base = indices if self.index is None else self.index[indices]
        return DiskRows(self.path, index=base, row_shape=self.row_shape)

    def with_row_shape(self, row_shape) -> "DiskRows":
        return DiskRows(self.path, index=self.index, row_shape=row_shape)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        key = np.asarray(key)
        if key.dtype == bool or key.ndim != 1:
            raise TypeError("DiskRows takes an integer, a slice or a 1-D integer array")
        n = len(self)
        if len(key) and (key.min() < -n or key.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        key = np.where(key < 0, key + n, key).astype(np.int64)
        file_rows = key if self.index is None else self.index[key]
        return self._read(file_rows)

    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(file_rows, return_inverse=True)
        raw = np.empty((len(unique),) + self.file_row_shape, self.file_dtype)
        if len(unique):
            fd = self._open()
            # One read per run of consecutive rows.
            breaks = np.flatnonzero(np.diff(unique) != 1) + 1
            starts = np.concatenate([[0], breaks])
            ends = np.concatenate([breaks, [len(unique)]])
            flat = memoryview(raw.reshape(-1).view(np.uint8))
            for s, e in zip(starts.tolist(), ends.tolist()):
                view = flat[s * self.row_bytes:e * self.row_bytes]
                offset = self.offset + int(unique[s]) * self.row_bytes
                while len(view):
                    got = os.preadv(fd, [view], offset)
                    if got <= 0:
                        raise TrainingSetError(f"{self.path} is shorter than its header says (truncated?)")
                    view, offset = view[got:], offset + got
        out = decode_unit(raw) if self.file_dtype == np.uint16 else raw.astype(np.float32, copy=False)
        return out[inverse.reshape(-1)].reshape((len(file_rows),) + self.row_shape)

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = None
        return state

    def __repr__(self) -> str:
        return f"DiskRows({str(self.path)!r}, shape={self.shape}, stored as {self.file_dtype})"
