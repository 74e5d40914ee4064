"""Speed of the survey simulator.

    .venv/bin/python -m benchmarks.bench_simulate [--n 200] [--full 1] [--out benchmarks/results/simulate.json]

Measures (in one run, so the ratios compare like with like on a shared machine):
- the demo survey (DEMO_SURVEY: n exposures of 4 CCDs of 1024x512, raw) with workers=1 and
  workers=2, and their ratio; also whether both runs wrote the same bytes;
- the first 40 exposures again as .fits.fz (RICE): time and bytes against plain .fits;
- seconds per full-size exposure (36 CCDs of 4612x2048 science pixels, raw, ~700 MB on disk),
  the file deleted afterwards.
"""
import argparse
import filecmp
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from desom.simulate import DEMO_SURVEY, FULL_CCD_SHAPE, simulate_exposure, simulate_survey  # noqa: E402


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "numpy": np.__version__}
    try:
        import scipy
        import astropy
        info.update(scipy=scipy.__version__, astropy=astropy.__version__)
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else ""
    except OSError:
        pass
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=DEMO_SURVEY["n"])
    ap.add_argument("--full", type=int, default=1, help="full-size 36-CCD exposures to time")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "simulate.json"))
    ap.add_argument("--tmp", default=None, help="scratch directory (default: system temp)")
    a = ap.parse_args()

    result = {"benchmark": "simulate", "command": " ".join([Path(sys.executable).name] + sys.argv),
              "machine": machine_info(), "demo_survey": dict(DEMO_SURVEY, n=a.n)}
    scratch = Path(tempfile.mkdtemp(prefix="bench_simulate_", dir=a.tmp))
    try:
        times, cpu = {}, {}
        for workers in (1, 2):
            out = scratch / f"w{workers}"
            ru0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            t0 = time.perf_counter()
            simulate_survey(a.n, out, seed=0, workers=workers, n_ccds=DEMO_SURVEY["n_ccds"],
                            ccd_shape=DEMO_SURVEY["ccd_shape"], layout=DEMO_SURVEY["layout"],
                            progress=False)
            times[workers] = time.perf_counter() - t0
            ru1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            # CPU seconds of this process and its (finished) workers: what the work costs,
            # whatever else the machine is running.
            cpu[workers] = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(ru0, ru1))
            print(f"demo survey, {a.n} exposures, workers={workers}: {times[workers]:.1f} s", flush=True)
        names = sorted(p.name for p in (scratch / "w1").iterdir())
        same = all(filecmp.cmp(scratch / "w1" / f, scratch / "w2" / f, shallow=False) for f in names)
        size = sum((scratch / "w1" / f).stat().st_size for f in names)
        result["demo"] = {
            "seconds_workers_1": round(times[1], 2),
            "seconds_workers_2": round(times[2], 2),
            "speedup_2_vs_1": round(times[1] / times[2], 2),
            "cpu_seconds_workers_1": round(cpu[1], 2),
            "cpu_seconds_workers_2": round(cpu[2], 2),
            "cpu_seconds_per_exposure": round(cpu[1] / a.n, 3),
            "wall_over_cpu_workers_1": round(times[1] / cpu[1], 2),
            "exposures_per_second_workers_2": round(a.n / times[2], 2),
            "under_2_minutes_workers_2": times[2] < 120,
            "same_bytes_workers_1_and_2": bool(same),
            "bytes_written": int(size),
        }
        shutil.rmtree(scratch / "w1")
        shutil.rmtree(scratch / "w2")

        # The same survey's first exposures tile-compressed (.fits.fz), workers=1.
        n_fz = min(a.n, 40)
        t0 = time.perf_counter()
        simulate_survey(n_fz, scratch / "fz", seed=0, workers=1, n_ccds=DEMO_SURVEY["n_ccds"],
                        ccd_shape=DEMO_SURVEY["ccd_shape"], compress=True, progress=False)
        t_fz = time.perf_counter() - t0
        fz_bytes = sum(p.stat().st_size for p in (scratch / "fz").glob("*.fz"))
        result["demo_compressed"] = {
            "n": n_fz, "seconds_workers_1": round(t_fz, 2),
            "seconds_per_exposure": round(t_fz / n_fz, 3),
            "seconds_per_exposure_uncompressed": round(times[1] / a.n, 3),
            "bytes_per_exposure": int(fz_bytes / n_fz),
            "bytes_per_exposure_uncompressed": int(size / a.n),
            "compression_ratio": round((size / a.n) / (fz_bytes / n_fz), 2),
        }
        shutil.rmtree(scratch / "fz")

        full = []
        for i in range(a.full):
            path = scratch / f"full_{i}.fits"
            t0 = time.perf_counter()
            truth = simulate_exposure("good", 100 + i, path, n_ccds=36, ccd_shape=FULL_CCD_SHAPE,
                                      layout="raw", dead_ccd_prob=0.0)
            dt = time.perf_counter() - t0
            full.append({"seconds": round(dt, 2), "bytes": path.stat().st_size,
                         "n_stars": truth.n_stars, "n_galaxies": truth.n_galaxies,
                         "n_cosmics": truth.n_cosmics})
            print(f"full-size exposure {i}: {dt:.1f} s, {path.stat().st_size / 1e6:.0f} MB", flush=True)
            path.unlink()
        if full:
            secs = [f["seconds"] for f in full]
            result["full_size"] = {
                "n_ccds": 36, "ccd_shape": list(FULL_CCD_SHAPE), "layout": "raw", "workers": 1,
                "exposures": full, "seconds_per_exposure": round(float(np.mean(secs)), 2),
                "seconds_per_ccd": round(float(np.mean(secs)) / 36, 3),
                "ratio_to_demo_exposure_workers_1": round(float(np.mean(secs)) / (times[1] / a.n), 1),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["note"] = ("Timings on a shared 2-core machine (other jobs running: see the load "
                      "average); wall_over_cpu_workers_1 > 1 shows the share of a core this run "
                      "got. CPU seconds per exposure is the figure that does not depend on them.")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(a.out)


if __name__ == "__main__":
    main()
