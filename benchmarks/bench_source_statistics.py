"""What measuring the source statistics (the seven of desom.baseline.STATISTIC_NAMES) at ingest
costs: summarise_exposure with and without them (source_statistics=True / False), interleaved
in the same run, on full-size MegaCam CCDs (2048 x 4612, 2 500 sources each, written raw by
benchmarks.bench_imaging) and, optionally, on the files of a folder (e.g. the demo's survey).

    .venv/bin/python -m benchmarks.bench_source_statistics                 # 4 full CCDs, 3 rounds
    .venv/bin/python -m benchmarks.bench_source_statistics --files var/demo-survey-200-0 --n-files 20

Each round summarises every file once with and once without (the order alternates between
rounds), so a shared machine's load falls on both alike; the figure is the ratio of the medians
and the statistics' own time as summarise_exposure records it (timings["statistics"]). Writes
benchmarks/results/source_statistics.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(path, config, with_statistics: bool) -> tuple[float, float]:
    from desom.pipeline import summarise_exposure

    t0 = time.perf_counter()
    summary = summarise_exposure(path, None, config, source_statistics=with_statistics)
    return time.perf_counter() - t0, float(summary.timings.get("statistics", 0.0))


def measure(paths, rounds: int, detector: str) -> dict:
    from desom.pipeline import ImagingConfig

    config = ImagingConfig(detector=detector, checksum=False)
    for path in paths[:1]:           # warm the page cache and the imports before timing
        _time(path, config, True)
    with_s, without_s, own_s, extra = [], [], [], []
    for r in range(rounds):
        for path in paths:
            order = (True, False) if r % 2 == 0 else (False, True)
            pair = {}
            for flag in order:
                seconds, own = _time(path, config, flag)
                pair[flag] = seconds
                (with_s if flag else without_s).append(seconds)
                if flag:
                    own_s.append(own)
            extra.append(pair[True] - pair[False])
    med_with, med_without = statistics.median(with_s), statistics.median(without_s)
    return {"files": len(paths), "rounds": rounds, "detector": detector,
            "seconds_with": round(med_with, 4), "seconds_without": round(med_without, 4),
            "ratio_with_over_without": round(med_with / med_without, 4),
            "median_paired_extra_seconds": round(statistics.median(extra), 4),
            "statistics_seconds": round(statistics.median(own_s), 4),
            "statistics_share_of_with": round(statistics.median(own_s) / med_with, 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ccds", type=int, default=4, help="full-size CCDs in the written exposure (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--detector", default="sep")
    parser.add_argument("--files", default=None, help="also time the FITS files of this folder")
    parser.add_argument("--n-files", type=int, default=20, help="at most this many of them (sorted)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "source_statistics.json"))
    args = parser.parse_args(argv)

    results = {"command": "python -m benchmarks.bench_source_statistics " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                           "load_average_start": os.getloadavg(), "shared": "other jobs ran at the same time"},
               "runs": {}}
    if args.ccds > 0:
        from benchmarks.bench_imaging import write_full_exposure

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "1000001o.fits"
            write_full_exposure(path, args.ccds, 2500)
            results["runs"]["full_ccds"] = {"ccds": args.ccds, "ccd_shape": [4612, 2048], "sources_per_ccd": 2500,
                                            **measure([str(path)], args.rounds, args.detector)}
            print(json.dumps(results["runs"]["full_ccds"]), flush=True)
    if args.files:
        from desom.fits_io import open_exposure

        paths = []
        for p in sorted(Path(args.files).glob("*.fits*")):
            with open_exposure(str(p)) as reader:
                if reader.metadata().is_science:
                    paths.append(str(p))
            if len(paths) >= args.n_files:
                break
        results["runs"]["folder"] = {"folder": str(args.files), **measure(paths, args.rounds, args.detector)}
        print(json.dumps(results["runs"]["folder"]), flush=True)
    results["machine"]["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
