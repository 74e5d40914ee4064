"""Ingest throughput: exposures per minute through `manage.py ingest` (a real process, a fresh
SQLite archive each run, the DESOM-1 of a small trained checkpoint active), for the demo
survey's small exposures and for full-size 36-CCD exposures, with 1 and 2 Dask workers. The
ratio of the two is the scaling; `--workers 0` (in-process) is the baseline without Dask.

    .venv/bin/python -m benchmarks.bench_ingest [--quick] [--full-exposures 20]

A scaling figure is only worth reporting on cores nobody else uses: before each timed run the
bench measures how busy the CPUs are (from /proc/stat, over a few seconds, so it does not lag
like the load average), waits up to --wait-idle seconds for them to be free, and when they are
still busy it records the run as taken on a busy machine and reports no scaling figure.

Writes benchmarks/results/ingest.json."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_checkpoint(survey: Path, out: Path) -> Path:
    """A small DESOM-1 (paper architecture, 25x25 map, short training) on the survey's cutouts."""
    import numpy as np

    from desom.checkpoint import save_checkpoint
    from desom.model import DESOMConfig, build_desom
    from desom.pipeline import ImagingConfig, sample_training_cutouts
    from desom.training import train_desom

    files = sorted(survey.glob("*.fits"))[:20]
    cutouts = np.concatenate([sample_training_cutouts(str(f), max_per_ccd=50, seed=i,
                                                      config=ImagingConfig(detector="sep"))
                              for i, f in enumerate(files)])
    config = DESOMConfig.desom1(iterations=30, batch_size=64, seed=0)
    model = build_desom(config)
    train_desom(model, cutouts[:, None], config, progress=False)
    path = out / "desom1.pt"
    save_checkpoint(path, model, config)
    return path


def cpu_busy_share(seconds: float = 3.0) -> float:
    """Share of all the CPUs' time spent busy over the next `seconds` (0 idle, 1 saturated)."""
    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]            # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(max_busy: float, wait_seconds: float) -> dict:
    """Wait (up to wait_seconds) for the CPUs to be at most max_busy busy; what was seen."""
    deadline = time.monotonic() + wait_seconds
    while True:
        busy = cpu_busy_share()
        if busy <= max_busy or time.monotonic() >= deadline:
            return {"cpu_busy_before": round(busy, 3), "load_average_before": os.getloadavg(),
                    "quiet": busy <= max_busy}
        time.sleep(10)


def ingest_run(files_dir: Path, checkpoint: Path, workers: int, quiet_check=None) -> dict:
    data = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
           "ARCHIVE_DETECTOR": "sep"}
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run(manage + ["migrate", "-v0"], env=env, check=True, cwd=REPO)
    register = ("from archive.services import versions; "
                f"versions.register_version({str(checkpoint)!r}, kind='desom1')")
    subprocess.run(manage + ["shell", "-c", register], env=env, check=True, cwd=REPO, capture_output=True)
    n_files = len(list(files_dir.glob("*.fits")))
    machine = quiet_check() if quiet_check else {}
    started = time.perf_counter()
    result = subprocess.run(manage + ["ingest", str(files_dir), "--workers", str(workers), "-v0"], env=env,
                            cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(data, ignore_errors=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return {"workers": workers, "files": n_files, "seconds": round(elapsed, 2),
            "exposures_per_minute": round(60 * n_files / elapsed, 2), "summary": result.stdout.strip().splitlines()[-2:],
            **machine}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 demo exposures, 1 full-size exposure")
    parser.add_argument("--demo-exposures", type=int, default=None)
    parser.add_argument("--full-exposures", type=int, default=None, help="full-size exposures (default 20)")
    parser.add_argument("--max-busy", type=float, default=0.10,
                        help="CPU share others may use before a run for its scaling figure to count")
    parser.add_argument("--wait-idle", type=float, default=600, help="seconds to wait for quiet CPUs before each run")
    parser.add_argument("--full-dir", default=None,
                        help="keep the full-size exposures here and reuse them when they are there already")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ingest.json"))
    args = parser.parse_args()
    n_demo = args.demo_exposures or (40 if args.quick else 200)
    n_full = args.full_exposures or (1 if args.quick else 20)

    from desom.simulate import DEMO_SURVEY, simulate_survey

    def quiet():
        return wait_until_quiet(args.max_busy, args.wait_idle)

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-files-"))
    results = {"benchmark": "ingest", "command": " ".join(["python", "-m", "benchmarks.bench_ingest"] + sys.argv[1:]),
               "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "load_average_at_start": os.getloadavg()},
               "detector": "sep", "runs": {}}
    try:
        demo = work / "demo"
        simulate_survey(n_demo, demo, seed=1, workers=2, progress=False)
        checkpoint = make_checkpoint(demo, work)
        results["runs"]["demo"] = {"exposure": f"{DEMO_SURVEY['n_ccds']} CCDs of {DEMO_SURVEY['ccd_shape']}",
                                   "by_workers": [ingest_run(demo, checkpoint, w, quiet) for w in (0, 1, 2)]}
        full = Path(args.full_dir) if args.full_dir else work / "full"
        if len(list(full.glob("*.fits"))) != n_full:
            shutil.rmtree(full, ignore_errors=True)
            # The simulator writes the same bytes whatever its worker count.
            simulate_survey(n_full, full, seed=2, workers=2, n_ccds=36, ccd_shape=(4612, 2048), progress=True)
        results["runs"]["full_size"] = {"exposure": "36 CCDs of 4612x2048 (raw, int16 + overscan)",
                                        "by_workers": [ingest_run(full, checkpoint, w, quiet) for w in (1, 2)]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, run in results["runs"].items():
        by = {r["workers"]: r for r in run["by_workers"]}
        if 1 in by and 2 in by:
            ratio = round(by[2]["exposures_per_minute"] / by[1]["exposures_per_minute"], 2)
            if all(r.get("quiet", False) for r in (by[1], by[2])):
                run["scaling_2_vs_1"] = ratio
            else:
                run["scaling_2_vs_1"] = None
                run["scaling_not_reported"] = (f"the CPUs were busy before a run (over {args.max_busy:.0%} used by "
                                               f"others); the ratio measured, {ratio}, is not a scaling figure")
    results["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"{'run':10s} {'workers':>7s} {'files':>5s} {'seconds':>8s} {'exp/min':>8s}")
    for name, run in results["runs"].items():
        for r in run["by_workers"]:
            print(f"{name:10s} {r['workers']:7d} {r['files']:5d} {r['seconds']:8.1f} {r['exposures_per_minute']:8.1f}")
        if run.get("scaling_2_vs_1"):
            print(f"{name:10s} 2 workers / 1 worker: {run['scaling_2_vs_1']:.2f}x")
        elif "scaling_not_reported" in run:
            print(f"{name:10s} no scaling figure: {run['scaling_not_reported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
