"""Content search over the archive: find-similar, search by prototypes, by an example cutout
and by an uploaded exposure. Views stay thin and call these.

One FAISS index per registered index kind per active model version (the kinds are declared
in `recommender.indexes.kinds`): under the active DESOM-1, "histo" holds histo-vectors compared
as distributions (Hellinger) and "activation" each exposure's mean soft prototype activations
for inner-product queries over DESOM-1 nodes; under the active DESOM-2, "desom2" holds each
exposure's DESOM-2 latent code (the best "like this one" of the science study). The indexes
are derived data: built from the database when missing, stale or corrupt, and kept in step
with it by the receivers in `recommender.receivers`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from desom.errors import UserError

from archive import selectors, vectors
from archive.models import CellAssignment, Exposure, ExposureVector, ModelVersion
from archive.services import versions

from .indexes import (ACTIVATION, DEFAULT_BUILD_CHUNK, DESOM2, HISTO, IndexKind, IndexStore, VectorChunks, index_kind,
                      index_kinds, neighbourhood_query, node_query_vector, parse_gpu_setting)

MAX_K = 200

_store_lock = threading.Lock()
_store: IndexStore | None = None


class SearchError(UserError):
    """A search that cannot be answered as asked; the message says why."""


def index_dir() -> Path:
    path = Path(settings.ARCHIVE_DATA_DIR) / "indexes"
    path.mkdir(parents=True, exist_ok=True)
    return path


def store() -> IndexStore:
    """The process's index store (indexes load lazily, once per process)."""
    global _store
    with _store_lock:
        if _store is None or _store.directory != index_dir():
            _store = IndexStore(index_dir(), autosave=False, mmap=getattr(settings, "ARCHIVE_INDEX_MMAP", True),
                                use_gpu=parse_gpu_setting(getattr(settings, "ARCHIVE_FAISS_GPU", "auto")))
        return _store


def reset_store() -> None:
    global _store
    with _store_lock:
        _store = None


def _active_desom1() -> ModelVersion:
    desom1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        raise SearchError("no active DESOM-1 yet: the archive has no vectors to search")
    return desom1


def _active_desom2(kind: IndexKind) -> ModelVersion:
    desom2 = versions.active_version(ModelVersion.DESOM2)
    if desom2 is None:
        raise SearchError(f"the {kind.name} index needs an active DESOM-2: run manage.py train_desom2, then assign")
    return desom2


def active_version_for(kind: IndexKind) -> ModelVersion:
    """The active model version whose rows feed (and key) an index of this kind."""
    return _active_desom2(kind) if kind.model == "desom2" else _active_desom1()


def _vector_rows(version: ModelVersion, kind: IndexKind = HISTO):
    if kind.model == "desom2":
        return CellAssignment.objects.filter(model_version=version, exposure__is_science=True, latent__isnull=False)
    return ExposureVector.objects.filter(model_version=version, exposure__is_science=True)


def expected_ids(version: ModelVersion, kind: IndexKind = HISTO) -> np.ndarray:
    return np.fromiter(_vector_rows(version, kind).values_list("exposure_id", flat=True), dtype=np.int64)


def _read_vectors(rows, kind: IndexKind, n_nodes: int, chunk_size: int | None):
    """(ids, raw vectors) of `rows` in exposure order, `chunk_size` rows at a time (None: all
    at once): each row's first non-null field of ``kind.vector_fields`` (the activation index
    falls back to the histo-vector for an exposure stored without activations)."""
    ids, blobs = [], []
    for exposure_id, *fields in rows.order_by("exposure_id").values_list(
            "exposure_id", *kind.vector_fields).iterator(chunk_size=2000):
        ids.append(exposure_id)
        blobs.append(next((f for f in fields if f is not None), fields[-1]))
        if chunk_size and len(ids) == chunk_size:
            yield np.asarray(ids, dtype=np.int64), vectors.stack(blobs, length=n_nodes)
            ids, blobs = [], []
    if ids or not chunk_size:
        yield np.asarray(ids, dtype=np.int64), vectors.stack(blobs, length=n_nodes)


def _n_nodes(desom1: ModelVersion) -> int:
    return desom1.map_shape[0] * desom1.map_shape[1]


def vector_dim(version: ModelVersion, kind: IndexKind) -> int:
    """The length of the raw vectors of an index: DESOM-1's nodes, or DESOM-2's latent size
    (its config's, else that of a stored latent code)."""
    if kind.model == "desom1":
        return _n_nodes(version)
    dim = int(version.config.get("latent_dim") or 0)
    if dim < 1:
        first = _vector_rows(version, kind).values_list(kind.vector_fields[0], flat=True).first()
        dim = 0 if first is None else vectors.from_blob(first).size
    if dim < 1:
        raise SearchError(f"no exposure has a latent code under DESOM-2 {version.version_id} yet: run manage.py assign")
    return dim


def index_vectors(version: ModelVersion, kind: IndexKind, exposure_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, raw vectors) for one index kind, from the database, all at once: for a few
    exposures (those just ingested, a page of results). A build reads `index_vector_chunks`."""
    rows = _vector_rows(version, kind)
    if exposure_ids is not None:
        rows = rows.filter(exposure_id__in=list(exposure_ids))
    return next(_read_vectors(rows, kind, vector_dim(version, kind), None))


# Exposure ids per query when a build fetches its training sample by id (well under SQLite's
# limit on a query's parameters).
SAMPLE_QUERY_IDS = 500


def index_vector_chunks(version: ModelVersion, kind: IndexKind, chunk_size: int = DEFAULT_BUILD_CHUNK) -> VectorChunks:
    """The vectors of an index build, read from the database a chunk at a time, so a build
    holds one chunk (and the index it fills) instead of every vector at once. An IVF build's
    training sample is fetched by exposure id, without a pass over the whole table."""
    rows = _vector_rows(version, kind)
    ordered = np.fromiter(rows.order_by("exposure_id").values_list("exposure_id", flat=True), dtype=np.int64)
    dim = vector_dim(version, kind)

    def rows_at(positions):
        wanted = ordered[np.asarray(positions, dtype=np.int64)]
        parts = [index_vectors(version, kind, wanted[i:i + SAMPLE_QUERY_IDS])
                 for i in range(0, wanted.size, SAMPLE_QUERY_IDS)]
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return VectorChunks(int(ordered.size), lambda: _read_vectors(rows, kind, dim, chunk_size), rows_at)


def _active_version_ids() -> set[str]:
    return {v.version_id for v in (versions.active_version(ModelVersion.DESOM1),
                                   versions.active_version(ModelVersion.DESOM2)) if v is not None}


def get_index(kind: str | IndexKind, version: ModelVersion | None = None, *, verify: bool = False):
    """The index of this kind (a name: UnknownIndexKind, a UserError, for one nobody registered)
    under the active version of its model (or ``version``): DESOM-1 for "histo" and
    "activation", DESOM-2 for "desom2"; loaded, mapped or built from the database."""
    kind = kind if isinstance(kind, IndexKind) else index_kind(kind)
    version = version or active_version_for(kind)
    the_store = store()
    # A newly activated model: the previous version's indexes are let go (their mappings and
    # private memory with them); the new ones are mapped, or built once, on this first search.
    keep = _active_version_ids() | {version.version_id}
    for loaded_version, _ in the_store.loaded():
        if loaded_version not in keep and not the_store.is_dirty(loaded_version):
            the_store.evict(loaded_version)
    return the_store.get(version.version_id, kind.name, lambda: expected_ids(version, kind),
                         lambda: index_vector_chunks(version, kind), verify=verify,
                         dim=vector_dim(version, kind))


@dataclass
class Match:
    exposure: Exposure
    score: float
    reason: str
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        e = self.exposure
        return {"id": e.pk, "expnum": e.expnum, "filename": e.filename, "band": e.band, "exptime": e.exptime,
                "score": round(float(self.score), 5), "reason": self.reason, **self.details}


def _check_k(k) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise SearchError("k must be a whole number")
    if not 1 <= k <= MAX_K:
        raise SearchError(f"k must lie in 1..{MAX_K}")
    return k


def _visible_matches(user, ids, scores, k, queryset=None, exclude=()) -> list[tuple[Exposure, float]]:
    """Keep results the user may see (and that pass `queryset`'s filters), in rank order."""
    allowed = selectors.visible_exposures(user, queryset if queryset is not None else Exposure.objects.all())
    rows = {e.pk: e for e in allowed.filter(pk__in=[int(i) for i in ids])}
    kept = [(rows[int(i)], float(s)) for i, s in zip(ids, scores) if int(i) in rows and int(i) not in exclude]
    return kept[:k]


def _search_until_enough(search, k: int, user, queryset, exclude=()):
    """Ask the index for more candidates until k visible, filtered results are found or the
    index is exhausted: proprietary exposures and filters never shorten a page silently."""
    want = k
    while True:
        ids, scores = search(want)
        kept = _visible_matches(user, ids, scores, k, queryset, exclude)
        if len(kept) >= k or len(ids) < want or want >= 50 * k:
            return kept
        want *= 4


def similar(exposure: Exposure, *, k: int = 10, index: str = HISTO.name, user=None, queryset=None) -> list[Match]:
    """Exposures most like `exposure` (itself excluded), nearest first, by the index kind named
    `index`."""
    k = _check_k(k)
    kind = index_kind(index)
    version = active_version_for(kind)
    the_index = get_index(kind, version)
    if exposure.pk not in the_index:
        model = "DESOM-2" if kind.model == "desom2" else "DESOM-1"
        raise SearchError(f"exposure {exposure.expnum} has no vector under the active {model} "
                          f"({'calibration frame' if not exposure.is_science else 'run manage.py assign'})")
    kept = _search_until_enough(lambda n: the_index.search_like(exposure.pk, n), k, user, queryset)
    return [Match(e, s, f"{kind.score}: {s:.3f}") for e, s in kept]


# What "most like it" on an exposure's page searches when the reader does not choose: DESOM-2's
# latent space first (precision@10 0.915 against 0.795 for histo-vectors on the science study's
# held-out exposures), the histo-vectors for an archive or exposure without DESOM-2 codes.
PAGE_SIMILAR_INDEXES = (DESOM2.name, HISTO.name)


def most_alike(exposure: Exposure, *, k: int = 10, index: str | None = None, user=None) -> tuple[str, list[Match]]:
    """(the index kind used, its matches) for an exposure's page: the kind asked for, or the
    first of PAGE_SIMILAR_INDEXES that can answer for this exposure."""
    if index:
        return index, similar(exposure, k=k, index=index, user=user)
    for name in PAGE_SIMILAR_INDEXES[:-1]:
        try:
            return name, similar(exposure, k=k, index=name, user=user)
        except SearchError:
            continue
    return PAGE_SIMILAR_INDEXES[-1], similar(exposure, k=k, index=PAGE_SIMILAR_INDEXES[-1], user=user)


def _share_in_nodes(exposure_ids, nodes, desom1) -> dict[int, float]:
    ids, histos = index_vectors(desom1, HISTO, exposure_ids)
    totals = histos.sum(axis=1)
    shares = np.divide(histos[:, nodes].sum(axis=1), totals, out=np.zeros(len(ids)), where=totals > 0)
    return dict(zip(ids.tolist(), shares.tolist()))


def parse_node_weights(nodes, n_nodes: int) -> dict[int, float]:
    """Nodes as a list of node numbers, a {node: weight} mapping, or "3,7:0.5,12"."""
    if isinstance(nodes, str):
        parsed = {}
        for part in filter(None, (p.strip() for p in nodes.split(","))):
            node, _, weight = part.partition(":")
            try:
                parsed[int(node)] = float(weight) if weight else 1.0
            except ValueError:
                raise SearchError(f"cannot read node {part!r}: use 12 or 12:0.5")
        nodes = parsed
    elif isinstance(nodes, (list, tuple)):
        try:
            nodes = {int(n): 1.0 for n in nodes}
        except (TypeError, ValueError):
            raise SearchError("nodes must be node numbers")
    elif isinstance(nodes, dict):
        try:
            nodes = {int(n): float(w) for n, w in nodes.items()}
        except (TypeError, ValueError):
            raise SearchError("nodes must map node numbers to weights")
    else:
        raise SearchError("nodes must be a list, a mapping or a comma-separated string")
    if not nodes:
        raise SearchError("give at least one DESOM-1 node")
    bad = [n for n in nodes if not 0 <= n < n_nodes]
    if bad:
        raise SearchError(f"nodes {bad[:5]} are outside the DESOM-1 map (0..{n_nodes - 1})")
    if any((not np.isfinite(w)) or w < 0 for w in nodes.values()) or not any(w > 0 for w in nodes.values()):
        raise SearchError("node weights must be non-negative numbers, at least one positive")
    return nodes


def by_prototypes(nodes, *, k: int = 10, user=None, spread: float = 0.0, queryset=None,
                  query_vector: np.ndarray | None = None, why: str = "") -> list[Match]:
    """Exposures whose sources crowd into the given DESOM-1 nodes (maximum inner product of
    the node weights with each exposure's prototype activations), highest first."""
    k = _check_k(k)
    desom1 = _active_desom1()
    n_nodes = _n_nodes(desom1)
    if query_vector is None:
        weights = parse_node_weights(nodes, n_nodes)
        query_vector = node_query_vector(weights, n_nodes, map_shape=desom1.map_shape, spread=spread)
        core = sorted(weights)
    else:
        core = [int(n) for n in np.argsort(query_vector)[::-1][:5] if query_vector[n] > 0]
    the_index = get_index(ACTIVATION, desom1)
    kept = _search_until_enough(lambda n: the_index.search(query_vector, n), k, user, queryset)
    shares = _share_in_nodes([e.pk for e, _ in kept], core, desom1)
    label = why or f"nodes {core[:8]}{'...' if len(core) > 8 else ''}"
    return [Match(e, s, f"{shares.get(e.pk, 0.0):.0%} of its sources in {label} (score {s:.3f})",
                  {"share_in_nodes": round(shares.get(e.pk, 0.0), 4)}) for e, s in kept]


def by_cutout(image, *, k: int = 10, user=None, radius: float = 1.0, queryset=None) -> tuple[dict, list[Match]]:
    """An example source: the 32x32 stamp goes through DESOM-1, then exposures rich in its BMU
    and the nodes around it are found. Returns (the stamp's BMU and map position, matches)."""
    from desom.cutouts import lone_stamp_input

    desom1 = _active_desom1()
    stamp = np.asarray(image, dtype=np.float32)
    if stamp.shape != (32, 32):
        raise SearchError(f"a cutout must be 32x32 pixels, not {'x'.join(map(str, stamp.shape))}")
    if not np.isfinite(stamp).any():
        raise SearchError("the cutout holds no finite pixel")
    predictor = versions.predictor_for(desom1)
    prediction = predictor.predict(lone_stamp_input(stamp, predictor.stamp_recipe)[None])
    bmu = int(prediction.bmu[0])
    rows, cols = desom1.map_shape
    query = neighbourhood_query(bmu, desom1.map_shape, radius)
    matches = by_prototypes(None, k=k, user=user, queryset=queryset, query_vector=query,
                            why=f"node {bmu} ({bmu // cols}, {bmu % cols}) and its neighbours")
    return {"bmu": bmu, "row": bmu // cols, "col": bmu % cols,
            "quantization": float(prediction.quantization[0])}, matches


def upload_limits():
    from desom.fits_io import FitsLimits

    return FitsLimits(max_hdus=settings.ARCHIVE_UPLOAD_MAX_HDUS, max_pixels=settings.ARCHIVE_UPLOAD_MAX_PIXELS,
                      max_bytes=settings.ARCHIVE_UPLOAD_MAX_DECOMPRESSED_BYTES)


def check_upload(path):
    """Refuse an uploaded FITS file whose headers declare more HDUs, pixels or decompressed
    bytes than the settings allow, before a pixel of it is decoded (desom.fits_io.scan_structure:
    a gzip bomb is refused from its first header, in milliseconds, in a few MB of memory).
    Raises SearchError (limits) or ExposureReadError (not a readable FITS file)."""
    from desom.fits_io import FitsLimitError, scan_structure

    try:
        return scan_structure(path, upload_limits())
    except FitsLimitError as exc:
        raise SearchError(f"the upload is refused: {exc.problem}") from None


UPLOAD_INDEXES = (HISTO.name, DESOM2.name)   # how an uploaded exposure can be compared


def upload_index(index: str | None) -> IndexKind:
    """The index kind an uploaded exposure is searched by, checked before the file is read:
    "histo" (its histo-vector) or "desom2" (placed by the active DESOM-2, which must read the
    active DESOM-1's histo-vectors). None: "desom2" where that holds, else "histo"."""
    from archive.services.assign import AssignmentError, trained_desom1

    if index is None:
        desom2 = versions.active_version(ModelVersion.DESOM2)
        try:
            return DESOM2 if desom2 is not None and trained_desom1(desom2) else HISTO
        except AssignmentError:
            return HISTO
    if index not in UPLOAD_INDEXES:
        raise SearchError(f"an uploaded exposure is searched by index {' or '.join(UPLOAD_INDEXES)}, not {index!r}")
    kind = index_kind(index)
    if kind.model == "desom2":
        try:
            trained_desom1(_active_desom2(kind))
        except AssignmentError as exc:
            raise SearchError(str(exc)) from None
    return kind


def by_exposure_file(path, *, k: int = 10, user=None, queryset=None,
                     index: str | None = HISTO.name) -> tuple[dict, list[Match]]:
    """An exposure that is not in the archive: bounded (check_upload), summarised through the
    imaging path, then its nearest exposures by `index` (``upload_index``): its histo-vector's,
    or, placed by the active DESOM-2 as `assign` places an archived exposure, its latent code's.
    Returns (the upload's summary, matches). The cheap checks (k, the index, active models)
    come before the file is touched."""
    from desom.pipeline import summarise_exposure

    from archive.services.assign import desom2_prediction

    k = _check_k(k)
    kind = upload_index(index)
    desom1 = _active_desom1()
    desom2 = _active_desom2(kind) if kind.model == "desom2" else None
    check_upload(path)
    checkpoint = None if desom2 is None else versions.load_checkpoint_for(desom2)
    # The seven source statistics are measured only for a DESOM-2 that reads them.
    with_statistics = checkpoint is not None and checkpoint.normaliser.uses_statistics
    summary = summarise_exposure(str(path), predictor=versions.predictor_for(desom1), config=versions.imaging_config(),
                                 source_statistics=with_statistics)
    if not summary.is_science:
        raise SearchError(f"the upload is a calibration frame ({summary.metadata.obstype}), not a science exposure")
    if summary.histo is None or summary.n_detected == 0:
        raise SearchError("no sources were detected in the uploaded exposure, so it has no histo-vector to compare")
    info = {"n_detected": int(summary.n_detected), "n_ccds": len(summary.ccds), "warnings": list(summary.warnings),
            "expnum": summary.metadata.expnum, "index": kind.name}
    query = summary.histo
    if desom2 is not None:
        placed = desom2_prediction(checkpoint, versions.predictor_for(desom2), np.asarray(summary.histo)[None],
                                   [summary.source_statistics])
        query = placed.latent[0]
        info["desom2_cell"] = int(placed.bmu[0])
    the_index = get_index(kind, desom2 or desom1)
    kept = _search_until_enough(lambda n: the_index.search(query, n), k, user, queryset)
    return info, [Match(e, s, f"{kind.score}: {s:.3f}") for e, s in kept]


def active_index_versions() -> dict[str, ModelVersion]:
    """Each registered kind whose model has an active version, with that version."""
    active = {"desom1": versions.active_version(ModelVersion.DESOM1),
              "desom2": versions.active_version(ModelVersion.DESOM2)}
    return {kind.name: active[kind.model] for kind in index_kinds() if active[kind.model] is not None}


def index_readiness() -> dict:
    """For /health/ready/: with an active DESOM-1, every kind's index file under the active
    models is on disk (a worker would otherwise build one from the database on its first
    search)."""
    desom1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        return {"ok": True, "active_desom1": None}
    files = {name: store().path_for(version.version_id, name) for name, version in active_index_versions().items()}
    missing = [kind for kind, path in files.items() if not path.exists()]
    return {"ok": not missing, "active_desom1": desom1.version_id,
            "missing": missing or None, "hint": "run manage.py build_index" if missing else None}


# --- keeping the indexes in step (called by the receivers) ---------------------------------

def _add_to_indexes(version: ModelVersion, model: str, exposure_ids) -> None:
    for kind in index_kinds():
        if kind.model == model:
            ids, raw = index_vectors(version, kind, exposure_ids)
            if len(ids):
                store().add(version.version_id, kind.name, ids, raw)


def on_exposures_ingested(exposure_ids, model_version=None) -> None:
    """New vectors under a DESOM-1 (the active one by default) join its indexes."""
    desom1 = model_version or versions.active_version(ModelVersion.DESOM1)
    if desom1 is not None and exposure_ids:
        _add_to_indexes(desom1, "desom1", exposure_ids)


def on_vectors_changed(exposure_ids, model_version=None) -> None:
    """Vectors, or cells and latent codes, written or rewritten for these exposures under
    `model_version`: they join, or replace theirs in, its indexes (an index not yet built is
    left to its first search). Without ids or a version, the indexes that may hold them are
    dropped, to be rebuilt from the database on their next use."""
    if exposure_ids is None or model_version is None:
        drop = {model_version.version_id} if model_version is not None else _active_version_ids()
        for version_id in drop:
            store().evict(version_id, delete_files=True)
        return
    if len(exposure_ids):
        _add_to_indexes(model_version, model_version.kind, exposure_ids)   # "desom1" or "desom2"


def on_exposures_deleted(exposure_ids) -> None:
    for name, version in active_index_versions().items():
        store().remove(version.version_id, name, exposure_ids)
    store().remove_everywhere(exposure_ids)


def flush_indexes() -> None:
    store().flush()
