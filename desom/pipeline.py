"""From a FITS exposure to its histo-vector (paper 3.5, 3.7, 5.2).

    exposure -> per CCD: read, trim + overscan, background, sources, edge cut
             -> at most ``max_per_ccd`` sources sampled per CCD (seeded), weight = detected/sampled
             -> 32x32 cutouts in [0, 1] -> DESOM-1: BMU and soft activations of each cutout
             -> histo-vector: BMU counts x per-CCD weight (sum = sources detected),
                density map = the same reshaped to the map, mean soft activation.

``summarise_exposure`` is pure (no global state, no I/O besides reading the file) and both it
and its result pickle, so a Dask worker can run it with a pickled predictor. One CCD is in
memory at a time. Calibration frames (OBSTYPE not OBJECT) give metadata only.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np

from desom.cutouts import (ASINH_RANGE, ASINH_SOFTENING, STAMP_SKY, STRETCHES, make_cutouts,
                           sample_indices)
from desom.detection import detect_sources, get_detector
from desom.footprint import read_footprint
from desom.fits_io import (CCDImage, ExposureMetadata, ExposureReadError, file_checksum,
                           open_exposure, prepare_ccd)

__all__ = ["ImagingConfig", "STAMP_FIELDS", "LEGACY_STAMPS", "CCDRecord", "ExposureSummary", "summarise_exposure",
           "sample_training_cutouts", "exposure_cutouts", "process_ccd", "histo_from_predictions",
           "ExposureReadError"]


_INFERENCE_CHUNK = 256
# The fields of ImagingConfig that say how a source becomes a DESOM-1 input: a DESOM-1 carries
# them (config.extra["stamps"]) so that every later cutout is made the way its training ones were.
STAMP_FIELDS = ("cutout_size", "clip_percentiles", "stamp_sky", "stretch", "asinh_softening", "asinh_range",
                "align")
# What a DESOM-1 trained before its recipe was recorded saw.
LEGACY_STAMPS = {"stamp_sky": "subtracted", "stretch": "clip"}


@dataclass(frozen=True)
class ImagingConfig:
    """Settings of the imaging path. Defaults follow the authors' Source Extractor set-up."""
    detector: str = "photutils"            # a name in desom.detection.DETECTORS
    background_box: int = 64
    background_filter: int = 3
    smoothing_fwhm: float = 3.0
    kernel_size: int = 7
    threshold_sigma: float = 2.0
    min_pixels: int = 5
    deblend: bool = False
    deblend_contrast: float = 0.005
    deblend_levels: int = 32
    clean: bool = True                     # sep only (SE's CLEAN)
    cutout_size: int = 32
    edge_margin: int = 37                  # sources nearer an edge than 32 + 5 px are dropped
    clip_percentiles: tuple = (1.0, 95.0)
    stamp_sky: str = "subtracted"          # "subtracted" | "kept" (cut before background removal)
    stretch: str = "clip"                  # "clip" (per-stamp percentiles) | "asinh" (sky-noise units)
    asinh_softening: float = ASINH_SOFTENING
    asinh_range: tuple = ASINH_RANGE
    align: bool = False                    # turn each stamp to its source's major axis
    max_per_ccd: int | None = 100          # None: every detected source
    seed: int = 0
    overscan_smooth_rows: int = 31
    checksum: bool = True
    ccds: tuple | None = None              # only these CCD positions (0-based); None: all

    def __post_init__(self):
        get_detector(self.detector)      # UnknownDetector (a ValueError) names the choices
        for name in ("background_box", "background_filter", "kernel_size", "min_pixels",
                     "cutout_size", "deblend_levels", "overscan_smooth_rows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threshold_sigma <= 0 or self.smoothing_fwhm <= 0:
            raise ValueError("threshold_sigma and smoothing_fwhm must be positive")
        if self.max_per_ccd is not None and self.max_per_ccd < 1:
            raise ValueError(f"max_per_ccd must be >= 1 or None, got {self.max_per_ccd}")
        if self.edge_margin < self.cutout_size // 2:
            raise ValueError(f"edge_margin ({self.edge_margin}) must be at least half the "
                             f"cutout size ({self.cutout_size})")
        lo, hi = self.clip_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got "
                             f"{self.clip_percentiles}")
        object.__setattr__(self, "clip_percentiles", (float(lo), float(hi)))
        if self.stamp_sky not in STAMP_SKY:
            raise ValueError(f"stamp_sky must be one of {STAMP_SKY}, got {self.stamp_sky!r}")
        if not isinstance(self.align, (bool, np.bool_)):
            raise ValueError(f"align must be true or false, got {self.align!r}")
        object.__setattr__(self, "align", bool(self.align))
        if self.stretch not in STRETCHES:
            raise ValueError(f"stretch must be one of {STRETCHES}, got {self.stretch!r}")
        a_lo, a_hi = (float(v) for v in self.asinh_range)
        if not (self.asinh_softening > 0 and a_lo < a_hi):
            raise ValueError(f"need asinh_softening > 0 and asinh_range low < high, got "
                             f"{self.asinh_softening} and {self.asinh_range}")
        object.__setattr__(self, "asinh_range", (a_lo, a_hi))
        if self.ccds is not None:
            object.__setattr__(self, "ccds", tuple(int(c) for c in self.ccds))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["clip_percentiles"] = list(self.clip_percentiles)
        out["asinh_range"] = list(self.asinh_range)
        if self.ccds is not None:
            out["ccds"] = list(self.ccds)
        return out

    def stamp_recipe(self) -> dict:
        """How this config turns sources into cutouts (JSON-friendly)."""
        d = self.to_dict()
        return {k: d[k] for k in STAMP_FIELDS}

    def with_stamps(self, recipe: dict | None) -> "ImagingConfig":
        """This config with a DESOM-1's stamp recipe (None: the recipe of a model that predates
        recorded recipes)."""
        recipe = dict(LEGACY_STAMPS if recipe is None else recipe)
        recipe.setdefault("align", False)   # recipes recorded before stamps could be turned
        unknown = set(recipe) - set(STAMP_FIELDS)
        if unknown:
            raise ValueError(f"unknown stamp recipe fields {sorted(unknown)}; expected some of {STAMP_FIELDS}")
        d = self.to_dict()
        d.update(recipe)
        return ImagingConfig.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict) -> "ImagingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("clip_percentiles", "asinh_range"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if kw.get("ccds") is not None:
            kw["ccds"] = tuple(kw["ccds"])
        return cls(**kw)


@dataclass
class CCDRecord:
    """What happened on one CCD."""
    extname: str
    hdu_index: int
    shape: tuple                 # (ny, nx) after trimming
    layout: str
    n_detected: int = 0          # sources found away from the edges
    n_sampled: int = 0
    weight: float = 0.0          # n_detected / n_sampled (0 when nothing sampled)
    status: str = "ok"           # "ok" | "no_sources" | "dead" | "all_nan" | "error"
    background: float | None = None
    background_rms: float | None = None
    bias_levels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


@dataclass
class ExposureSummary:
    path: str
    file_size: int
    checksum: str | None
    metadata: ExposureMetadata
    is_science: bool
    ccds: list = field(default_factory=list)
    n_detected: int = 0
    n_sampled: int = 0
    weight: float = 0.0                       # n_detected / n_sampled over the exposure
    histo: np.ndarray | None = None           # (n_nodes,) float32, sum == n_detected
    activations: np.ndarray | None = None     # (n_nodes,) float32 mean soft activation
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    model_version: str | None = None
    map_shape: tuple | None = None
    detector: str | None = None
    footprint: object | None = None           # desom.footprint.ExposureFootprint, from the WCS
    # The source statistics of desom.baseline (STATISTIC_NAMES -> float, None where
    # unmeasurable), from the same detections; None for a calibration frame or when not asked.
    source_statistics: dict | None = None

    def to_dict(self) -> dict:
        """JSON-friendly dict (arrays as lists, dates as ISO strings)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["metadata"] = self.metadata.to_dict()
        out["ccds"] = [dataclasses.asdict(c) for c in self.ccds]
        for c in out["ccds"]:
            c["shape"] = list(c["shape"])
        for key in ("histo", "activations"):
            out[key] = None if out[key] is None else [float(v) for v in out[key]]
        out["map_shape"] = None if self.map_shape is None else list(self.map_shape)
        out["footprint"] = None if self.footprint is None else dataclasses.asdict(self.footprint)
        return out

    @property
    def density_map(self) -> np.ndarray | None:
        """The histo-vector as the (map_rows, map_cols) density map."""
        if self.histo is None or self.map_shape is None:
            return None
        return self.histo.reshape(self.map_shape)


def _ccd_condition(data: np.ndarray):
    """(status, note) for a CCD that cannot hold sources, else (None, note-or-None)."""
    sample = data[::4, ::4]
    finite = np.isfinite(sample)
    if not finite.any() and not np.isfinite(data).any():
        return "all_nan", "all pixels are NaN (or BLANK)"
    values = sample[finite] if finite.any() else data[np.isfinite(data)]
    med = np.median(values)
    if np.median(np.abs(values - med)) == 0 and np.ptp(values) == 0:
        return "dead", f"flat CCD (every pixel {float(med):.6g}): dead or unread"
    frac_nan = 1.0 - float(finite.mean())
    if frac_nan > 0.5:
        return None, f"{100 * frac_nan:.0f}% of pixels are NaN"
    return None, None


def ccd_stamps(ccd: CCDImage, result, x, y, config: ImagingConfig) -> np.ndarray:
    """The (N, S, S) float32 cutouts in [0, 1] at (x, y) of one detected CCD, cut and stretched
    as ``config`` says (stamp_sky, stretch): the one place the archive turns sources into
    DESOM-1 inputs."""
    if config.stamp_sky == "kept":
        image, sky = ccd.data, result.background
    else:
        image, sky = result.subtracted, 0.0
    noise = result.background_rms
    if noise is None or not np.isfinite(noise) or noise <= 0:
        noise = 1.0   # a flat or odd CCD; only the asinh stretch reads it
    if sky is None or not np.isfinite(sky):
        sky = 0.0
    return make_cutouts(image, x, y, config.cutout_size, config.clip_percentiles,
                        stretch=config.stretch, sky=sky, noise=noise,
                        softening=config.asinh_softening, value_range=config.asinh_range,
                        align=config.align)


def process_ccd(ccd: CCDImage, config: ImagingConfig, timings: dict | None = None,
                on_detection=None, on_sample=None):
    """Detect, edge-cut, sample and cut out one prepared CCD.
    Returns (CCDRecord, cutouts (n_sampled, S, S) float32).

    on_detection: optional callable(ccd, DetectionResult, inside_mask) run after detection,
    for callers that measure the sources further (the plain baseline's source statistics).
    on_sample: optional callable(ccd, DetectionResult, x, y, weight) with the sampled sources,
    for callers that keep more of each source than its cutout (the science study)."""
    timings = timings if timings is not None else {}
    size = config.cutout_size
    record = CCDRecord(extname=ccd.extname, hdu_index=ccd.index, shape=tuple(ccd.data.shape),
                       layout=ccd.layout, bias_levels=dict(ccd.bias_levels),
                       warnings=list(ccd.warnings))
    empty = np.zeros((0, size, size), np.float32)
    status, note = _ccd_condition(ccd.data)
    if note:
        record.warnings.append(f"{ccd.extname}: {note}")
    if status is not None:
        record.status = status
        return record, empty
    ny, nx = ccd.data.shape
    if min(ny, nx) <= 2 * config.edge_margin:
        record.status = "no_sources"
        record.warnings.append(f"{ccd.extname}: CCD {nx}x{ny} too small for the "
                               f"{config.edge_margin} px edge margin")
        return record, empty

    try:
        result = detect_sources(ccd.data, config, saturated=ccd.saturated)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # One odd CCD must not cost the other 35: record it and go on.
        record.status = "error"
        record.warnings.append(f"{ccd.extname}: detection failed ({type(exc).__name__}: {exc})")
        return record, empty
    for key, value in result.timings.items():
        timings[key] = timings.get(key, 0.0) + value
    record.warnings.extend(f"{ccd.extname}: {w}" for w in result.warnings)
    record.background = result.background
    record.background_rms = result.background_rms
    inside = result.inside(ccd.data.shape, config.edge_margin)
    if on_detection is not None:
        on_detection(ccd, result, inside)
    x, y = result.x[inside], result.y[inside]
    record.n_detected = int(x.size)
    if x.size == 0:
        record.status = "no_sources"
        record.warnings.append(f"{ccd.extname}: no sources detected")
        return record, empty

    t0 = time.perf_counter()
    rng = np.random.default_rng([int(config.seed), int(ccd.index)])
    chosen = sample_indices(x.size, config.max_per_ccd, rng)
    cutouts = ccd_stamps(ccd, result, x[chosen], y[chosen], config)
    record.n_sampled = int(chosen.size)
    record.weight = record.n_detected / record.n_sampled
    if on_sample is not None:
        on_sample(ccd, result, x[chosen], y[chosen], record.weight)
    timings["cutouts"] = timings.get("cutouts", 0.0) + time.perf_counter() - t0
    return record, cutouts


def histo_from_predictions(bmu: np.ndarray, weights: np.ndarray, n_nodes: int) -> np.ndarray:
    """Weighted BMU counts (float32, length n_nodes); sum = sum of weights."""
    return np.bincount(np.asarray(bmu, np.int64), weights=np.asarray(weights, np.float64),
                       minlength=int(n_nodes)).astype(np.float32)


def _iter_ccds(reader, config: ImagingConfig, timings: dict, on_detection=None, on_sample=None):
    """Yield (CCDRecord, cutouts) CCD by CCD; only one CCD's pixels are alive at a time."""
    infos = reader.ccds
    if config.ccds is not None:
        bad = [c for c in config.ccds if not 0 <= c < len(infos)]
        if bad:
            raise ValueError(f"{reader.path}: CCD positions {bad} out of range (file has "
                             f"{len(infos)} CCDs)")
        infos = [infos[c] for c in config.ccds]
    for info in infos:
        t0 = time.perf_counter()
        raw = reader.read_raw(info)
        if isinstance(raw, np.memmap):
            # Materialise now so 'read' holds the I/O (a memmap is lazy); dropping the map
            # releases its pages.
            raw = np.array(raw)
        t1 = time.perf_counter()
        try:
            ccd = prepare_ccd(raw, reader.header(info), config.overscan_smooth_rows,
                              index=info.index, extname=info.extname)
        except ValueError as exc:
            raise ExposureReadError(reader.path, str(exc), f"{info.index} '{info.extname}'") from None
        del raw
        t2 = time.perf_counter()
        timings["read"] = timings.get("read", 0.0) + (t1 - t0)
        timings["prepare"] = timings.get("prepare", 0.0) + (t2 - t1)
        record, cutouts = process_ccd(ccd, config, timings, on_detection, on_sample)
        del ccd
        yield record, cutouts


def summarise_exposure(path, predictor=None, config: ImagingConfig = ImagingConfig(),
                       source_statistics: bool = True) -> ExposureSummary:
    """Summarise one exposure: metadata, per-CCD detections, the source statistics of
    desom.baseline (source_statistics; DESOM-2 may read them beside the histo-vector) and, with
    a DESOM-1 predictor, the histo-vector and mean activations. Raises ExposureReadError for an
    unreadable file; problems of single CCDs are warnings in the summary."""
    if not isinstance(config, ImagingConfig):
        raise TypeError(f"config must be an ImagingConfig, got {type(config).__name__}")
    if predictor is not None and getattr(predictor, "kind", "desom1") != "desom1":
        raise ValueError(f"summarise_exposure needs a DESOM-1 predictor, got a "
                         f"{getattr(predictor, 'kind', '?')} one")
    if predictor is not None:
        # A DESOM-1 reads cutouts made the way its training cutouts were.
        config = config.with_stamps(getattr(predictor, "stamp_recipe", None))
    t_start = time.perf_counter()
    timings: dict = {}
    path = os.fspath(path)
    t0 = time.perf_counter()
    with open_exposure(path) as reader:
        metadata = reader.metadata()
        summary = ExposureSummary(path=path, file_size=reader.file_size, checksum=None,
                                  metadata=metadata, is_science=metadata.is_science,
                                  warnings=list(reader.warnings), detector=config.detector,
                                  model_version=getattr(predictor, "version_id", None))
        try:
            summary.footprint = read_footprint(reader)
        except Exception as exc:  # a broken WCS costs the footprint, never the exposure
            summary.warnings.append(f"no footprint from the WCS ({type(exc).__name__}: {exc})")
        timings["open"] = time.perf_counter() - t0
        if config.checksum:
            t0 = time.perf_counter()
            summary.checksum = file_checksum(path)
            timings["checksum"] = time.perf_counter() - t0
        if not metadata.is_science:
            timings["total"] = time.perf_counter() - t_start
            summary.timings = timings
            return summary
        if metadata.obstype is None:
            summary.warnings.append("no OBSTYPE/EXPTYPE keyword: treated as a science exposure")

        statistics = measure = None
        if source_statistics:
            from desom.baseline import SourceStatistics

            statistics = SourceStatistics(edge_margin=config.edge_margin)

            def measure(ccd, result, inside):   # timed: the statistics' share of the imaging
                t0 = time.perf_counter()
                statistics.on_detection(ccd, result, inside)
                timings["statistics"] = timings.get("statistics", 0.0) + time.perf_counter() - t0

            def measure_sampled(ccd, result, x, y, weight):
                t0 = time.perf_counter()
                statistics.on_sample(ccd, result, x, y, weight)
                timings["statistics"] = timings.get("statistics", 0.0) + time.perf_counter() - t0
        all_cutouts, all_weights = [], []
        for record, cutouts in _iter_ccds(reader, config, timings, on_detection=measure,
                                          on_sample=measure_sampled if statistics is not None else None):
            summary.ccds.append(record)
            summary.warnings.extend(record.warnings)
            if cutouts.shape[0]:
                all_cutouts.append(cutouts)
                all_weights.append(np.full(cutouts.shape[0], record.weight, np.float64))

    if statistics is not None:
        from desom.baseline import statistics_to_dict

        summary.source_statistics = statistics_to_dict(statistics.statistics())
    summary.n_detected = int(sum(r.n_detected for r in summary.ccds))
    summary.n_sampled = int(sum(r.n_sampled for r in summary.ccds))
    summary.weight = summary.n_detected / summary.n_sampled if summary.n_sampled else 0.0
    if summary.n_detected == 0:
        summary.warnings.append("no sources detected in the exposure")

    if predictor is not None:
        t0 = time.perf_counter()
        n_nodes = int(predictor.n_nodes)
        summary.map_shape = tuple(int(v) for v in predictor.map_shape)
        if all_cutouts:
            cutouts = np.concatenate(all_cutouts)
            weights = np.concatenate(all_weights)
            bmu = np.empty(cutouts.shape[0], np.int64)
            act_sum = np.zeros(n_nodes, np.float64)
            # Chunks bound the encoder's activation memory (a 1024-cutout batch of conv
            # feature maps is ~130 MB) whatever the predictor's batch size.
            for start in range(0, cutouts.shape[0], _INFERENCE_CHUNK):
                stop = start + _INFERENCE_CHUNK
                prediction = predictor.predict(cutouts[start:stop, None, :, :])
                bmu[start:stop] = prediction.bmu
                act_sum += (weights[start:stop, None] * prediction.activations).sum(axis=0)
            summary.histo = histo_from_predictions(bmu, weights, n_nodes)
            summary.activations = (act_sum / weights.sum()).astype(np.float32)
        else:
            summary.histo = np.zeros(n_nodes, np.float32)
        timings["inference"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    summary.timings = timings
    return summary


def sample_training_cutouts(path, max_per_ccd: int | None = 100, seed: int = 0,
                            config: ImagingConfig = ImagingConfig()) -> np.ndarray:
    """(N, 32, 32) float32 cutouts in [0, 1] for DESOM-1 training: at most ``max_per_ccd``
    per CCD, seeded. Calibration frames give an empty array."""
    config = dataclasses.replace(config, max_per_ccd=max_per_ccd, seed=seed)
    size = config.cutout_size
    with open_exposure(path) as reader:
        if not reader.metadata().is_science:
            return np.zeros((0, size, size), np.float32)
        parts = [cutouts for _, cutouts in _iter_ccds(reader, config, {}) if cutouts.shape[0]]
    return np.concatenate(parts) if parts else np.zeros((0, size, size), np.float32)


def exposure_cutouts(path, config: ImagingConfig = ImagingConfig(), on_detection=None, on_sample=None):
    """Every sampled cutout of a science exposure with its weight, in one read of the file:
    (metadata, CCD records, cutouts (N, S, S) float32, weights (N,) float64). The evaluation
    study images each exposure once and runs several DESOM-1 models over the result.
    on_detection, on_sample: as in process_ccd. Calibration frames give no cutouts."""
    size = config.cutout_size
    with open_exposure(path) as reader:
        metadata = reader.metadata()
        records, parts, weights = [], [], []
        if metadata.is_science:
            for record, cutouts in _iter_ccds(reader, config, {}, on_detection, on_sample):
                records.append(record)
                if cutouts.shape[0]:
                    parts.append(cutouts)
                    weights.append(np.full(cutouts.shape[0], record.weight, np.float64))
    if not parts:
        return metadata, records, np.zeros((0, size, size), np.float32), np.zeros(0, np.float64)
    return metadata, records, np.concatenate(parts), np.concatenate(weights)
