"""The science study's data: a simulated survey imaged once, kept as raw stamps (science stage 1).

Each exposure is simulated into a real FITS file (the raw MegaPrime layout: int16 + BZERO,
overscan, two amplifiers), imaged by the archive's own path (``desom.pipeline.exposure_cutouts``:
overscan, trim, sep background and detection, the edge cut, at most 100 sources per CCD), and
the file is then deleted unless ``keep_fits``: 2 000 such exposures are 50 GB, their stamps 8 GB.

What is kept of every sampled source is the stamp *before* any stretch, so that every stamp
recipe the study compares is computed from the same pixels of the same sources:

    stamps   float16 (N, 32, 32)  pixel - the CCD's sky level (median of sep's background map);
                                  the sky's structure is kept, its level removed
    plane    float32 (N, 3)       sep's background map over the stamp, minus the same sky level,
                                  as a plane: value at the centre, slope per pixel in x and y
    noise    float32 (N,)         the CCD's sky noise (median of sep's RMS map)
    weight   float32 (N,)         detected / sampled on the source's CCD

so "today's" stamp (cut from the background-subtracted image) is ``stamps - plane`` (sep's map is
smooth on 64 px boxes; a plane is exact to well under the noise over 32 px), the authors' stamp
(sky kept) is ``stamps`` (a per-stamp percentile clip does not see the level removed), and the
asinh stamps divide by ``noise``. Per exposure: the plain baseline's five statistics from the same
detections, the number of sources detected, the per-CCD sky and noise, and the truth.

Work is done in shards of exposures written by the workers themselves, so an interrupted run
resumes at the first missing shard; ``consolidate`` then joins them into one memory-mapped stamp
array and one table.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

STAMP = 32
SHARD = 20              # exposures per shard file
FLOAT16_MAX = 65000.0   # stamps are clamped here: float16 holds 65504


class _Collector:
    """Keeps the raw stamps of the sampled sources and the baseline's statistics."""

    def __init__(self, edge_margin: int):
        from desom.baseline import SourceStatistics

        self.stats = SourceStatistics(edge_margin=edge_margin)
        self.stamps, self.planes, self.noise, self.weight, self.ccd = [], [], [], [], []
        self.ccd_sky, self.ccd_noise = [], []

    def on_detection(self, ccd, result, inside):
        self.stats.on_detection(ccd, result, inside)

    def on_sample(self, ccd, result, x, y, weight):
        from desom.baseline import sampled_stamps

        raw, plane, noise = sampled_stamps(ccd, result, x, y)
        self.stamps.append(np.clip(raw, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16))
        self.planes.append(plane)
        n = len(x)
        self.noise.append(noise)
        self.weight.append(np.full(n, weight, np.float32))
        self.ccd.append(np.full(n, ccd.index, np.int16))
        self.ccd_sky.append(float(result.background) if np.isfinite(result.background) else 0.0)
        rms = result.background_rms
        self.ccd_noise.append(float(rms) if rms and np.isfinite(rms) else 1.0)


def _empty(shape, dtype):
    return np.zeros(shape, dtype)


def image_one(job: dict, workdir: str, survey: dict, keep_fits: bool) -> dict:
    """Simulate one exposure into a FITS file, image it, keep its stamps; returns arrays."""
    from desom.pipeline import ImagingConfig, exposure_cutouts
    from desom.simulate.exposure import simulate_exposure

    path = Path(workdir) / job["file"]
    t0 = time.perf_counter()
    truth = simulate_exposure(job["kind"], job["seed"], path, n_ccds=survey["n_ccds"],
                              ccd_shape=tuple(survey["ccd_shape"]), layout=job["layout"],
                              severity=job["severity"], expnum=job["expnum"], mjd_obs=job["mjd_obs"],
                              dead_ccd_prob=survey["dead_ccd_prob"], overrides=job.get("overrides") or None,
                              nuisances=bool(survey.get("nuisances", False)))
    t1 = time.perf_counter()
    config = ImagingConfig(detector="sep", checksum=False)
    collector = _Collector(config.edge_margin)
    out = {"truth": truth.to_dict(), "error": ""}
    try:
        _, records, _, _ = exposure_cutouts(str(path), config, collector.on_detection, collector.on_sample)
        out["n_detected"] = int(sum(r.n_detected for r in records))
    except Exception as exc:   # recorded, and the study goes on with the others
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["n_detected"] = 0
        collector = _Collector(config.edge_margin)
    finally:
        if not keep_fits:
            path.unlink(missing_ok=True)
    t2 = time.perf_counter()
    def cat(parts, shape, dtype):
        return np.concatenate(parts) if parts else _empty(shape, dtype)
    out.update(
        stamps=cat(collector.stamps, (0, STAMP, STAMP), np.float16),
        plane=cat(collector.planes, (0, 3), np.float32),
        noise=cat(collector.noise, (0,), np.float32),
        weight=cat(collector.weight, (0,), np.float32),
        ccd=cat(collector.ccd, (0,), np.int16),
        features=collector.stats.features() if not out["error"] else np.full(5, np.nan),
        sky=np.array([np.median(collector.ccd_sky) if collector.ccd_sky else np.nan,
                      np.median(collector.ccd_noise) if collector.ccd_noise else np.nan]),
        seconds=np.array([t1 - t0, t2 - t1]),
    )
    return out


def _run_shard(index: int, jobs: list, shard_dir: str, survey: dict, keep_fits: bool) -> tuple[int, int, float]:
    workdir = Path(shard_dir).parent / ("fits" if keep_fits else f"tmp-{index:04d}")
    workdir.mkdir(parents=True, exist_ok=True)
    results = [image_one(job, str(workdir), survey, keep_fits) for job in jobs]
    if not keep_fits:
        shutil.rmtree(workdir, ignore_errors=True)
    counts = np.array([len(r["weight"]) for r in results])
    arrays = {
        "stamps": np.concatenate([r["stamps"] for r in results]),
        "plane": np.concatenate([r["plane"] for r in results]),
        "noise": np.concatenate([r["noise"] for r in results]),
        "weight": np.concatenate([r["weight"] for r in results]),
        "ccd": np.concatenate([r["ccd"] for r in results]),
        "counts": counts,
        "features": np.stack([r["features"] for r in results]),
        "sky": np.stack([r["sky"] for r in results]),
        "n_detected": np.array([r["n_detected"] for r in results]),
        "seconds": np.stack([r["seconds"] for r in results]),
        "truth": np.array(json.dumps([r["truth"] for r in results])),
        "errors": np.array(json.dumps([r["error"] for r in results])),
    }
    final = Path(shard_dir) / f"shard-{index:04d}.npz"
    tmp = final.with_suffix(".part.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, final)
    return index, int(counts.sum()), float(arrays["seconds"].sum())


def build_survey(outdir: Path, n: int, seed: int, workers: int = 2, survey: dict | None = None,
                 keep_fits: bool = False, log=print) -> Path:
    """Simulate and image the survey in shards (resuming), then consolidate. Returns outdir."""
    from tqdm import tqdm

    from desom.simulate.survey import SCIENCE_SURVEY, SurveyConfig, plan_survey

    survey = dict(SCIENCE_SURVEY if survey is None else survey)
    survey.setdefault("dead_ccd_prob", 0.03)
    outdir = Path(outdir)
    shard_dir = outdir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    spec = {"n": n, "seed": seed, **{k: list(v) if isinstance(v, tuple) else v for k, v in survey.items()}}
    spec_file = outdir / "survey.json"
    if spec_file.exists() and json.loads(spec_file.read_text()) != spec:
        raise ValueError(f"{outdir} holds another survey ({spec_file.read_text()}); choose another folder")
    spec_file.write_text(json.dumps(spec))
    if (outdir / "table.npz").exists():
        return outdir
    cfg = SurveyConfig(n=n, seed=seed, good_share=0.5, n_ccds=survey["n_ccds"],
                       ccd_shape=tuple(survey["ccd_shape"]), galaxy_density=survey.get("galaxy_density"),
                       dead_ccd_prob=survey["dead_ccd_prob"], nuisances=bool(survey.get("nuisances", False)))
    jobs = plan_survey(cfg)
    shards = [jobs[i:i + SHARD] for i in range(0, len(jobs), SHARD)]
    todo = [i for i in range(len(shards)) if not (shard_dir / f"shard-{i:04d}.npz").exists()]
    log(f"survey: {len(jobs)} exposures in {len(shards)} shards, {len(shards) - len(todo)} already done")
    started = time.perf_counter()
    if todo:
        bar = tqdm(total=len(todo) * SHARD, desc="simulating + imaging", unit="exp")
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_shard, i, shards[i], str(shard_dir), survey, keep_fits) for i in todo]
            for fut in as_completed(futures):
                index, n_cut, _ = fut.result()
                bar.update(len(shards[index]))
                bar.set_postfix(cutouts_last_shard=n_cut, refresh=False)
        bar.close()
    consolidate(outdir, len(shards), time.perf_counter() - started)
    return outdir


def consolidate(outdir: Path, n_shards: int, seconds: float = float("nan")) -> None:
    """Join the shards: stamps.npy (memory-mappable float16) and table.npz (everything else)."""
    from numpy.lib.format import open_memmap

    shard_dir = outdir / "shards"
    files = [shard_dir / f"shard-{i:04d}.npz" for i in range(n_shards)]
    total = 0
    for f in files:
        with np.load(f) as z:
            total += int(z["counts"].sum())
    stamps = open_memmap(outdir / "stamps.part.npy", mode="w+", dtype=np.float16, shape=(total, STAMP, STAMP))
    keys = ("plane", "noise", "weight", "ccd", "counts", "features", "sky", "n_detected", "seconds")
    parts = {k: [] for k in keys}
    truth, errors = [], []
    at = 0
    for f in files:
        with np.load(f) as z:
            s = z["stamps"]
            stamps[at:at + len(s)] = s
            at += len(s)
            for k in keys:
                parts[k].append(z[k])
            truth += json.loads(str(z["truth"]))
            errors += json.loads(str(z["errors"]))
    stamps.flush()
    del stamps
    os.replace(outdir / "stamps.part.npy", outdir / "stamps.npy")
    table = {k: np.concatenate(v) for k, v in parts.items()}
    table["offsets"] = np.r_[0, np.cumsum(table["counts"])]
    table["truth"] = np.array(json.dumps(truth))
    table["errors"] = np.array(json.dumps(errors))
    table["build_seconds"] = np.array(seconds)
    np.savez(outdir / "table.part.npz", **table)
    os.replace(outdir / "table.part.npz", outdir / "table.npz")


def load_survey(outdir: Path) -> dict:
    """The consolidated survey: stamps memory-mapped, the table in memory, truth as rows."""
    outdir = Path(outdir)
    with np.load(outdir / "table.npz") as z:
        data = {k: z[k] for k in z.files}
    data["truth"] = json.loads(str(data["truth"]))
    data["errors"] = json.loads(str(data["errors"]))
    data["stamps"] = np.load(outdir / "stamps.npy", mmap_mode="r")
    return data
