"""Imaging path benchmark: seconds per full-size MegaCam CCD for each stage, the whole exposure,
and the peak memory of summarising a full 36-CCD raw exposure.

    .venv/bin/python -m benchmarks.bench_imaging            # full run (a few minutes, 2 cores)
    .venv/bin/python -m benchmarks.bench_imaging --quick    # 4 CCDs, one CCD per stage

It writes a raw exposure laid out as MegaCam writes it (2112 x 4644 int16 + BZERO per CCD around
a 2048 x 4612 science area, two amplifiers with their own bias and overscan) to a temporary
directory, measures, deletes it, and writes benchmarks/results/imaging.json. Every stage is
also given as a ratio to reading the CCD alone (the I/O floor, warm page cache), measured in the
same run, because timings on this shared machine are noisy. Peak RSS is measured in a child
process that only imports the library, builds a full DESOM-1 and summarises the file: its
VmHWM (the high-water mark of that process image); its ru_maxrss is reported too, but on Linux
that value survives fork+exec and so starts at the benchmark parent's own RSS.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

SCIENCE = (4612, 2048)        # rows, columns of a MegaCam CCD's science area
OVERSCAN = 32


def _factory():
    spec = importlib.util.spec_from_file_location(
        "fitsfactory", ROOT / "tests" / "desom" / "fitsfactory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _science(rng, n_sources, ff):
    """A full CCD: sky 1200 ADU, noise 20 ADU, Gaussian sources (FWHM 3.5 px)."""
    img = rng.standard_normal(SCIENCE, dtype=np.float32)
    img *= np.float32(20.0)
    img += np.float32(1200.0)
    x = rng.uniform(0, SCIENCE[1] - 1, n_sources)
    y = rng.uniform(0, SCIENCE[0] - 1, n_sources)
    flux = np.exp(rng.uniform(np.log(3e3), np.log(1e6), n_sources))
    ff.add_gaussians(img, x, y, flux, 3.5)
    return img


def write_full_exposure(path, n_ccds, n_sources, seed=0):
    """Raw exposure written one CCD at a time (the writer never holds the whole file)."""
    ff = _factory()
    rng = np.random.default_rng(seed)
    fits.PrimaryHDU(header=ff.primary_header(n_ccds=n_ccds)).writeto(path, overwrite=True)
    for k in range(n_ccds):
        science = _science(rng, n_sources, ff)
        data, header = ff.raw_ccd(science, k, bias=(1000.0 + 10 * k, 1150.0 + 10 * k),
                                  rng_seed=seed)
        del science
        fits.append(path, data, header=header)
        del data
    return Path(path).stat().st_size


def write_processed_copy(raw_path, out_path):
    """The raw exposure trimmed, bias-subtracted and stored float32, one CCD at a time."""
    from desom.fits_io import open_exposure

    with open_exposure(raw_path) as reader:
        fits.PrimaryHDU(header=reader.primary_header).writeto(out_path, overwrite=True)
        for info in reader.ccds:
            ccd = reader.read_ccd(info)
            header = fits.Header({"EXTNAME": info.extname,
                                  "DATASEC": f"[1:{ccd.data.shape[1]},1:{ccd.data.shape[0]}]"})
            fits.append(out_path, ccd.data, header=header)
            del ccd
    return Path(out_path).stat().st_size


def _median(values):
    return float(statistics.median(values)) if values else None


def stage_timings(path, ccds, predictor, crowded_path=None):
    """Seconds per CCD for each stage, medians over ``ccds`` (positions)."""
    from desom.cutouts import make_cutouts, sample_indices
    from desom.detection import detect_sources
    from desom.fits_io import open_exposure, prepare_ccd
    from desom.pipeline import ImagingConfig

    rows = {k: [] for k in ("read", "prepare", "background_photutils", "detection_photutils",
                            "background_sep", "detection_sep", "cutouts_100", "cutouts_100_turned",
                            "cutouts_all", "inference_100")}
    counts = {"photutils": [], "sep": []}
    with open_exposure(path) as reader:
        for k in ccds:
            info = reader.ccds[k]
            t0 = time.perf_counter()
            raw = np.array(reader.read_raw(info))
            rows["read"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ccd = prepare_ccd(raw, reader.header(info))
            rows["prepare"].append(time.perf_counter() - t0)
            del raw
            results = {}
            for backend in ("photutils", "sep"):
                res = detect_sources(ccd.data, ImagingConfig(detector=backend),
                                     saturated=ccd.saturated)
                rows[f"background_{backend}"].append(res.timings["background"])
                rows[f"detection_{backend}"].append(res.timings["detection"])
                inside = res.inside(ccd.data.shape, 37)
                counts[backend].append(int(inside.sum()))
                results[backend] = (res, inside)
            res, inside = results["sep"]
            x, y = res.x[inside], res.y[inside]
            idx = sample_indices(x.size, 100, np.random.default_rng(k))
            t0 = time.perf_counter()
            cut = make_cutouts(res.subtracted, x[idx], y[idx])
            rows["cutouts_100"].append(time.perf_counter() - t0)
            make_cutouts(res.subtracted, x[idx[:2]], y[idx[:2]], align=True)   # warm-up (torch's first call)
            t0 = time.perf_counter()
            make_cutouts(res.subtracted, x[idx], y[idx], align=True)   # turned to the major axis
            rows["cutouts_100_turned"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            make_cutouts(res.subtracted, x, y)
            rows["cutouts_all"].append(time.perf_counter() - t0)
            predictor.predict(cut[:2, None])          # warm-up
            t0 = time.perf_counter()
            predictor.predict(cut[:, None])
            rows["inference_100"].append(time.perf_counter() - t0)
            del ccd, results, res
    out = {k: _median(v) for k, v in rows.items()}
    out["n_ccds_measured"] = len(ccds)
    out["sources_per_ccd"] = {b: _median(v) for b, v in counts.items()}
    return out


def crowded_detection(n_sources):
    """Detection on one very crowded full CCD, both backends."""
    from desom.detection import detect_sources
    from desom.pipeline import ImagingConfig

    ff = _factory()
    img = _science(np.random.default_rng(99), n_sources, ff)
    out = {"injected_sources": n_sources}
    for backend in ("photutils", "sep"):
        res = detect_sources(img, ImagingConfig(detector=backend), keep_subtracted=False)
        out[backend] = {"seconds": sum(res.timings.values()), "detected": len(res),
                        "warnings": res.warnings}
    return out


def inference_throughput(predictor, n=3600):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 1, 32, 32)).astype(np.float32)
    predictor.predict(x[:64])
    t0 = time.perf_counter()
    predictor.predict(x)
    return {"cutouts": n, "seconds": time.perf_counter() - t0}


def run_child(path, detector, ccds):
    """Summarise in a fresh process and report its peak RSS."""
    cmd = [sys.executable, "-m", "benchmarks.bench_imaging", "--child", str(path), detector,
           json.dumps(ccds)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(path, detector, ccds_json):
    import torch

    from desom.inference import DesomPredictor
    from desom.model import DESOMConfig, build_desom
    from desom.pipeline import ImagingConfig, summarise_exposure

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    predictor = DesomPredictor(build_desom(DESOMConfig.desom1()))
    predictor.predict(np.zeros((4, 1, 32, 32), np.float32))
    hwm_before = _vm_hwm_mb()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ccds = json.loads(ccds_json)
    config = ImagingConfig(detector=detector, ccds=tuple(ccds) if ccds else None)
    t0 = time.perf_counter()
    summary = summarise_exposure(path, predictor, config)
    wall = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_peak = _vm_hwm_mb()
    print(json.dumps({
        "detector": detector, "ccds": len(summary.ccds), "wall_s": wall,
        "timings": summary.timings, "n_detected": summary.n_detected,
        "n_sampled": summary.n_sampled, "histo_sum": float(summary.histo.sum()),
        # VmHWM: the high-water mark of this process image alone. ru_maxrss is kept across
        # fork+exec on Linux, so in a child of a big parent it starts at the parent's RSS.
        "peak_rss_mb": hwm_peak if hwm_peak is not None else rss_peak / 1024,
        "rss_after_imports_mb": hwm_before if hwm_before is not None else rss_before / 1024,
        "ru_maxrss_mb": rss_peak / 1024,
        "warnings": summary.warnings[:5]}))


def sep_floor_pass(path, config) -> float:
    """Seconds for the least any imaging of this file must do with the same detector settings:
    read each CCD, make its science area float32, and run sep's background and extraction as
    the pipeline calls them (desom.detection.detector_settings), nothing else."""
    import sep

    from desom.detection import detector_settings, smoothing_kernel
    from desom.fits_io import open_exposure, parse_section

    s = detector_settings(config)
    kernel = smoothing_kernel(s["fwhm"], s["ksize"])
    sep.set_extract_pixstack(5_000_000)
    sep.set_sub_object_limit(8192)
    t0 = time.perf_counter()
    with open_exposure(path) as reader:
        for info in reader.ccds:
            raw = np.array(reader.read_raw(info))
            header = reader.header(info)
            section = parse_section(header.get("DATASEC"), raw.shape) or (slice(None), slice(None))
            data = raw[section].astype(np.float32)
            del raw
            bkg = sep.Background(data, bw=s["box"], bh=s["box"], fw=s["filter_size"], fh=s["filter_size"])
            back, rms = bkg.back(), bkg.rms()
            data -= back
            sep.extract(data, thresh=s["thresh"], err=rms, minarea=s["min_pixels"], filter_kernel=kernel,
                        filter_type="conv", deblend_nthresh=s["levels"],
                        deblend_cont=s["contrast"] if s["deblend"] else 1.0, clean=s["clean"])
    return time.perf_counter() - t0


def floor_child_main(path, rounds):
    """The whole summarise_exposure against sep_floor_pass on the same file, alternated in one
    process (page cache warm for both), `rounds` times each."""
    import torch

    from desom.inference import DesomPredictor
    from desom.model import DESOMConfig, build_desom
    from desom.pipeline import ImagingConfig, summarise_exposure

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    predictor = DesomPredictor(build_desom(DESOMConfig.desom1()))
    predictor.predict(np.zeros((4, 1, 32, 32), np.float32))
    config = ImagingConfig(detector="sep")
    sep_floor_pass(path, config)                      # warm the page cache
    floors, wholes, timings = [], [], []
    for _ in range(int(rounds)):
        floors.append(sep_floor_pass(path, config))
        t0 = time.perf_counter()
        summary = summarise_exposure(path, predictor, config)
        wholes.append(time.perf_counter() - t0)
        timings.append(summary.timings)
    floor, whole = statistics.median(floors), statistics.median(wholes)
    print(json.dumps({"floor_s": floors, "summarise_s": wholes, "floor_median_s": floor,
                      "summarise_median_s": whole, "ratio": whole / floor, "rounds": int(rounds),
                      "summarise_timings": timings[-1], "n_sampled": summary.n_sampled,
                      "load_average": os.getloadavg()}))


def run_floor_child(path, rounds: int = 2) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_imaging", "--floor-child", str(path), str(rounds)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"floor child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _vm_hwm_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def machine_info():
    import astropy
    import photutils
    import sep
    import torch
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "numpy": np.__version__, "astropy": astropy.__version__,
            "photutils": photutils.__version__, "sep": sep.__version__,
            "torch": torch.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 CCDs, one CCD per stage")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "imaging.json"))
    parser.add_argument("--sources", type=int, default=2500, help="sources per CCD")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--floor-only", action="store_true",
                        help="only the whole summarise_exposure against read + sep (the floor), 36 CCDs")
    parser.add_argument("--floor-rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.floor_only:
        return floor_only(args)

    import torch

    from desom.inference import DesomPredictor
    from desom.model import DESOMConfig, build_desom

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    n_ccds = 4 if args.quick else 36
    stage_ccds = [0] if args.quick else [0, 1, 2]
    photutils_ccds = [0] if args.quick else [0, 1, 2]
    t_start = time.perf_counter()
    result = {"command": " ".join([Path(sys.executable).name] + sys.argv),
              "machine": machine_info(), "quick": args.quick,
              "ccd": {"science": list(SCIENCE), "stored": [SCIENCE[0] + OVERSCAN,
                                                           SCIENCE[1] + 2 * OVERSCAN],
                      "format": "int16 + BZERO 32768, two amplifiers with overscan"},
              "sources_per_ccd_injected": args.sources}
    tmp = tempfile.mkdtemp(prefix="bench_imaging_", dir=args.tmpdir)
    try:
        path = Path(tmp) / "1999999o.fits"
        t0 = time.perf_counter()
        size = write_full_exposure(path, n_ccds, args.sources)
        result["exposure"] = {"n_ccds": n_ccds, "file_mb": size / 2 ** 20,
                              "write_s": time.perf_counter() - t0}
        print(f"wrote {n_ccds} CCDs, {size / 2 ** 20:.0f} MB in {time.perf_counter() - t0:.1f}s",
              flush=True)

        # compressed read of one CCD, for comparison with the plain read
        from desom.fits_io import open_exposure
        fz = Path(tmp) / "one.fits.fz"
        with open_exposure(path) as reader:
            raw = np.array(reader.read_raw(0))
            header = reader.header(0)
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw, header=header,
                                                           compression_type="RICE_1")]).writeto(fz)
        del raw
        with open_exposure(fz) as reader:
            reader.read_raw(0)
            t0 = time.perf_counter()
            np.array(reader.read_raw(0))
            read_fz = time.perf_counter() - t0

        predictor = DesomPredictor(build_desom(DESOMConfig.desom1()))
        stages = stage_timings(path, stage_ccds, predictor)
        stages["read_fz"] = read_fz
        floor = stages["read"]
        per_ccd = {
            "read": stages["read"],
            "read_fz": stages["read_fz"],
            "trim_overscan": stages["prepare"],
            "background_photutils": stages["background_photutils"],
            "detection_photutils": stages["detection_photutils"],
            "background_sep": stages["background_sep"],
            "detection_sep": stages["detection_sep"],
            "cutouts_100_sampled": stages["cutouts_100"],
            "cutouts_100_sampled_turned": stages["cutouts_100_turned"],
            "cutouts_all_detected": stages["cutouts_all"],
            "desom1_inference_100": stages["inference_100"],
        }
        result["per_ccd_seconds"] = per_ccd
        result["per_ccd_ratio_to_read"] = {k: v / floor for k, v in per_ccd.items()}
        result["per_ccd_measured_on"] = stages["n_ccds_measured"]
        result["sources_per_ccd_detected"] = stages["sources_per_ccd"]
        pu = stages["background_photutils"] + stages["detection_photutils"]
        se = stages["background_sep"] + stages["detection_sep"]
        result["detector_comparison"] = {
            "photutils_s_per_ccd": pu, "sep_s_per_ccd": se,
            "faster": "sep" if se < pu else "photutils",
            "speedup": max(pu, se) / min(pu, se)}
        result["desom1_inference_throughput"] = inference_throughput(predictor)
        print("stages done", flush=True)

        result["floor_comparison"] = run_floor_child(path, args.floor_rounds)
        print(f"summarise / (read + sep): {result['floor_comparison']['ratio']:.2f}", flush=True)
        sep_run = run_child(path, "sep", [])
        result["whole_exposure_sep"] = sep_run
        print(f"sep whole exposure {sep_run['wall_s']:.1f}s peak RSS {sep_run['peak_rss_mb']:.0f} MB",
              flush=True)
        pu_run = run_child(path, "photutils", photutils_ccds)
        per_ccd_pu = (pu_run["wall_s"] - pu_run["timings"].get("checksum", 0.0)
                      - pu_run["timings"].get("open", 0.0)) / len(photutils_ccds)
        fixed = sep_run["timings"].get("checksum", 0.0) + sep_run["timings"].get("open", 0.0)
        result["whole_exposure_photutils"] = dict(
            pu_run, extrapolated=True,
            note=f"measured on {len(photutils_ccds)} CCDs, extrapolated to {n_ccds}",
            per_ccd_s=per_ccd_pu,
            extrapolated_wall_s=fixed + per_ccd_pu * n_ccds)
        whole_sep_per_ccd = (sep_run["wall_s"] - fixed) / n_ccds
        result["whole_exposure_per_ccd_ratio_to_read"] = {
            "sep": whole_sep_per_ccd / floor, "photutils": per_ccd_pu / floor}
        if not args.quick:
            result["crowded_ccd_detection"] = crowded_detection(20000)
            # The same exposure as processed float32 (1.36 GB): memory must stay bounded too.
            processed = Path(tmp) / "1999999p.fits"
            size = write_processed_copy(path, processed)
            path.unlink()
            run = run_child(processed, "sep", [])
            run["file_mb"] = size / 2 ** 20
            result["whole_exposure_sep_processed_float32"] = run
            print(f"processed float32 ({size / 2 ** 20:.0f} MB): {run['wall_s']:.1f}s, "
                  f"peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
        peaks = [sep_run["peak_rss_mb"], pu_run["peak_rss_mb"]]
        if "whole_exposure_sep_processed_float32" in result:
            peaks.append(result["whole_exposure_sep_processed_float32"]["peak_rss_mb"])
        result["peak_rss_mb_max"] = max(peaks)
        result["peak_rss_under_1gb"] = max(peaks) < 1024
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["bench_wall_s"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("per_ccd_seconds", "detector_comparison",
                                             "peak_rss_mb_max", "peak_rss_under_1gb",
                                             "bench_wall_s")}, indent=2))
    return result


def floor_only(args) -> dict:
    """--floor-only: a full-size exposure, the floor comparison, into results/imaging_floor.json
    (the full run keeps it in imaging.json beside every stage)."""
    out = Path(args.out if args.out != str(ROOT / "benchmarks" / "results" / "imaging.json")
               else ROOT / "benchmarks" / "results" / "imaging_floor.json")
    n_ccds = 4 if args.quick else 36
    result = {"command": " ".join(["python -m benchmarks.bench_imaging"] + sys.argv[1:]), "machine": machine_info(),
              "load_average_at_start": os.getloadavg(), "n_ccds": n_ccds, "sources_per_ccd_injected": args.sources}
    tmp = tempfile.mkdtemp(prefix="bench_imaging_floor_", dir=args.tmpdir)
    try:
        path = Path(tmp) / "1999999o.fits"
        write_full_exposure(path, n_ccds, args.sources)
        result["floor_comparison"] = run_floor_child(path, args.floor_rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["floor_comparison"], indent=1))
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--floor-child":
        floor_child_main(*sys.argv[2:4])
    else:
        main()
