"""The per-process store of loaded indexes: one per (model version, kind), loaded lazily,
rebuilt from the database (through the caller's callbacks) when missing, stale or corrupt."""
from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .arrays import as_ids
from .fileformat import IndexFileError
from .kinds import index_kind
from .locks import file_lock
from .vector_index import VectorChunks, VectorIndex

log = logging.getLogger(__name__)

IdsLoader = Callable[[], "np.ndarray | Sequence[int]"]
# What a build reads: (ids, raw vectors) all at once, or VectorChunks (a chunk at a time).
VectorsLoader = Callable[[], "tuple[np.ndarray | Sequence[int], np.ndarray] | VectorChunks"]


class IndexStore:
    """One loaded index per (model_version, kind) per process, kept in ``directory``.

    ``get`` loads lazily and rebuilds from the DB (through the caller's callbacks) when the file
    is missing, corrupt or stale. ``add``/``remove`` keep the loaded index (and, with
    ``autosave``, its file) in step with the DB without a rebuild. Another process that saves
    the same file is noticed on the next ``get`` (the file's size and mtime changed) and the
    file is reloaded and verified.
    """

    def __init__(self, directory, *, autosave: bool = True, dim: int = 625,
                 index_options: Mapping | None = None, mmap: bool = False, use_gpu: bool | None = None):
        self.directory = Path(directory)
        self.autosave = autosave
        self.mmap = bool(mmap)
        # Every index this store loads or builds searches on the GPU per use_gpu (see VectorIndex).
        self.use_gpu = use_gpu
        self.dim = dim
        self.index_options = dict(index_options or {})
        self._indexes: dict[tuple[str, str], VectorIndex] = {}
        self._signatures: dict[tuple[str, str], tuple | None] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self.rebuilds = 0   # how many times a callback rebuilt an index (for logs and tests)

    def path_for(self, model_version: str, kind: str) -> Path:
        index_kind(kind)   # refuses an unknown kind
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version).strip("._") or "model"
        digest = hashlib.sha256(model_version.encode("utf-8")).hexdigest()[:8]
        return self.directory / f"{kind}-{safe}-{digest}.faiss"

    def _lock_for(self, key):
        with self._locks_guard:
            return self._locks.setdefault(key, threading.RLock())

    def _signature(self, path: Path):
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def is_dirty(self, model_version: str) -> bool:
        """Whether an index of this model version has changes not yet saved."""
        return any(key[0] == model_version for key in self._dirty)

    def loaded(self) -> list[tuple[str, str]]:
        return sorted(self._indexes)

    def peek(self, model_version: str, kind: str) -> VectorIndex | None:
        """The loaded index, if any, without touching disk or DB."""
        return self._indexes.get((model_version, kind))

    def get(self, model_version: str, kind: str, expected_ids_loader: IdsLoader,
            vectors_loader: VectorsLoader, *, verify: bool = False, dim: int | None = None) -> VectorIndex:
        """The index for (model_version, kind), loaded or rebuilt as needed.

        ``expected_ids_loader()`` returns the ids the DB holds for this model version (asked
        when the index is first loaded, when the file changed on disk, or when ``verify``);
        ``vectors_loader()`` returns ``(ids, raw_vectors)`` or, for a build that reads the
        database a chunk at a time, ``VectorChunks``; it is called only to rebuild. ``dim``: the
        raw vectors' length of a build (default: the store's ``dim``); kinds differ in it.
        """
        key = (model_version, kind)
        path = self.path_for(model_version, kind)
        with self._lock_for(key):
            index = self._indexes.get(key)
            if index is not None and not verify and self._signature(path) == self._signatures.get(key):
                if not index.should_rebuild:
                    return index
            expected = as_ids(np.asarray(expected_ids_loader(), dtype=np.int64).ravel())
            previous = index
            signature = self._signature(path)   # taken before reading: a later write is seen next time
            if index is not None and key not in self._dirty and signature != self._signatures.get(key):
                index = None   # the file changed on disk (another process saved it): reload it
            if index is None:
                try:
                    index = VectorIndex.load(path, model_version=model_version, kind=kind,
                                             expected_ids=expected, mmap=self.mmap, use_gpu=self.use_gpu)
                except FileNotFoundError:
                    log.info("no %s index for model %s on disk; building it", kind, model_version)
                except IndexFileError as exc:
                    log.warning("%s index for model %s unusable: %s", kind, model_version, exc)
            if index is None and previous is not None and not previous.is_stale(model_version, expected):
                index = previous                    # the file went bad, ours is still right: rewrite it
                index.save(path)
                signature = self._signature(path)
                self._dirty.discard(key)
            if index is not None and not index.is_stale(model_version, expected) and not index.should_rebuild:
                self._indexes[key] = index
                if key not in self._dirty:
                    self._signatures[key] = signature
                return index
            return self._rebuild(key, path, vectors_loader, expected, dim)

    def _rebuild(self, key, path, vectors_loader, expected=None, dim=None):
        """Build from the database, one process at a time per file: processes that want the
        same index wait on a lock file, and those that waited load the file the first one
        wrote instead of building it again."""
        with file_lock(path):
            if expected is not None:
                try:
                    ready = VectorIndex.load(path, model_version=key[0], kind=key[1], expected_ids=expected,
                                             mmap=self.mmap, use_gpu=self.use_gpu)
                except (FileNotFoundError, IndexFileError):
                    ready = None
                if ready is not None and not ready.should_rebuild:
                    self._indexes[key] = ready
                    self._signatures[key] = self._signature(path)
                    self._dirty.discard(key)
                    return ready
            return self._build_and_save(key, path, vectors_loader, dim)

    def _remap(self, key, path, index):
        """After this process saved `index`, map the file it wrote instead of keeping a
        private copy (with mmap on). The file was written and synced from `index` a moment ago,
        so its sections are not hashed again: that would read every page of it into this
        process while the private copy is still held."""
        if not self.mmap:
            return index
        try:
            mapped = VectorIndex.load(path, model_version=key[0], kind=key[1], mmap=True, use_gpu=self.use_gpu,
                                      check_payload=False)
        except (FileNotFoundError, IndexFileError) as exc:
            log.warning("could not map %s after saving it (%s); keeping the private copy", path, exc)
            return index
        self._indexes[key] = mapped
        return mapped

    def _build_and_save(self, key, path, vectors_loader, dim=None):
        model_version, kind = key
        source = vectors_loader()
        if not isinstance(source, VectorChunks):
            ids, vectors = source
            ids = as_ids(np.asarray(ids, dtype=np.int64).ravel())
            source = VectorChunks.from_arrays(ids, np.asarray(vectors).reshape(ids.size, -1) if ids.size else ())
        options = {"use_gpu": self.use_gpu, **self.index_options}
        index = VectorIndex(kind, model_version, dim or self.dim, **options).build_from_chunks(source)
        index.save(path)
        self._indexes[key] = index
        self._signatures[key] = self._signature(path)
        self._dirty.discard(key)
        self.rebuilds += 1
        return self._remap(key, path, index)

    def _loaded_or_file(self, key) -> VectorIndex | None:
        index = self._indexes.get(key)
        if index is not None:
            return index
        path = self.path_for(*key)
        try:
            index = VectorIndex.load(path, model_version=key[0], kind=key[1], mmap=self.mmap, use_gpu=self.use_gpu)
        except FileNotFoundError:
            return None
        except IndexFileError as exc:
            log.warning("discarding unusable index file %s: %s", path, exc)
            return None
        self._indexes[key] = index
        self._signatures[key] = self._signature(path)
        return index

    def add(self, model_version: str, kind: str, ids, vectors) -> bool:
        """Add (or replace) exposures in the index if one is loaded or on disk; returns whether
        an index was updated. With no index yet, nothing is done: the first ``get`` builds it."""
        key = (model_version, kind)
        with self._lock_for(key):
            index = self._loaded_or_file(key)
            if index is None:
                return False
            index.add(ids, vectors, replace=True)
            self._after_mutation(key, index)
            return True

    def remove(self, model_version: str, kind: str, ids) -> int:
        """Remove exposures from the index if one is loaded or on disk; returns how many."""
        key = (model_version, kind)
        with self._lock_for(key):
            index = self._loaded_or_file(key)
            if index is None:
                return 0
            removed = index.remove(ids)
            if removed:
                self._after_mutation(key, index)
            return removed

    def remove_everywhere(self, ids) -> int:
        """Remove exposures from every loaded index (exposures deleted from the archive)."""
        return sum(self.remove(mv, kind, ids) for mv, kind in self.loaded())

    def _after_mutation(self, key, index):
        if self.autosave:
            index.save(self.path_for(*key))
            self._signatures[key] = self._signature(self.path_for(*key))
            self._dirty.discard(key)
            self._remap(key, self.path_for(*key), index)
        else:
            self._dirty.add(key)

    def flush(self) -> list[Path]:
        """Save every index changed since its last save."""
        saved = []
        for key in sorted(self._dirty):
            with self._lock_for(key):
                index = self._indexes.get(key)
                if index is not None and key in self._dirty:
                    path = index.save(self.path_for(*key))
                    self._signatures[key] = self._signature(path)
                    self._dirty.discard(key)
                    self._remap(key, path, index)
                    saved.append(path)
        return saved

    def evict(self, model_version: str | None = None, kind: str | None = None,
              *, delete_files: bool = False) -> None:
        """Forget loaded indexes (all, one model version, or one kind of it)."""
        for key in list(self._indexes):
            if (model_version is None or key[0] == model_version) and (kind is None or key[1] == kind):
                with self._lock_for(key):
                    self._indexes.pop(key, None)
                    self._signatures.pop(key, None)
                    self._dirty.discard(key)
                    if delete_files:
                        self.path_for(*key).unlink(missing_ok=True)

