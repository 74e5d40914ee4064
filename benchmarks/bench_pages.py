"""Response times of the server-rendered pages at the demo's scale, against /health/ measured
in the same run as the baseline.

A demo archive (`manage.py demo --no-serve --exposures N`) is built in a data directory of its
own unless one is there already; then, in-process through Django's test client, every page is
requested once with a cold figure cache (figures deleted, the process's model, prototype and
index caches dropped) and then `--repeat` times warm. Reports p50/p99 per page, the first
(cold) request, and the warm p50 as a multiple of /health/'s.

    .venv/bin/python -m benchmarks.bench_pages                       # 200 exposures, ~10+ min the first time
    .venv/bin/python -m benchmarks.bench_pages --data-dir /tmp/d --repeat 30
    .venv/bin/python -m benchmarks.bench_pages --ccds 2 --ccd-shape 512x256   # quicker to build

Writes benchmarks/results/pages.json. Not part of the tests: it measures, it does not judge.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_WARM_MS = 200.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exposures", type=int, default=200)
    parser.add_argument("--data-dir", default=None, help="default: /tmp/desom-bench-pages-<exposures>")
    parser.add_argument("--repeat", type=int, default=20, help="warm requests per page")
    parser.add_argument("--ccds", type=int, default=None,
                        help="simulate the survey with this many CCDs per exposure (default: the demo's 4)")
    parser.add_argument("--ccd-shape", default=None, help="with --ccds: rows x columns, e.g. 512x256")
    parser.add_argument("--desom1-iterations", type=int, default=600, help="as the demo's default")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pages.json"))
    return parser.parse_args()


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


def timed(client, url):
    started = time.perf_counter()
    response = client.get(url)
    if getattr(response, "streaming", False):
        for _ in response.streaming_content:
            pass
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}")
    return elapsed


def main() -> int:
    args = parse_args()
    data_dir = Path(args.data_dir or f"/tmp/desom-bench-pages-{args.exposures}").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ARCHIVE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "benchmark-only")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")  # plain HTTP in-process, as a local run
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client needs "testserver" allowed, as in tests
    started_build = time.perf_counter()
    call_command("migrate", verbosity=0)
    from archive.models import CellAssignment, Exposure, ModelVersion
    from archive.services import versions

    built = False
    if versions.active_version(ModelVersion.DESOM2) is None:
        print(f"building a demo archive of {args.exposures} exposures in {data_dir}", flush=True)
        survey = data_dir / f"demo-survey-{args.exposures}-0"
        if args.ccds and not (survey / "truth.csv").exists():
            # Smaller exposures than the demo's, simulated first where the demo looks for its survey;
            # the pages' times depend on the number of exposures and maps, not on CCD sizes.
            call_command("simulate_survey", args.exposures, str(survey), seed=0, ccds=args.ccds,
                         ccd_shape=args.ccd_shape, good_share=0.5, calibration=2, verbosity=0)
        call_command("demo", no_serve=True, exposures=args.exposures, verbosity=0,
                     desom1_iterations=args.desom1_iterations)
        built = True
    build_s = time.perf_counter() - started_build

    from django.contrib.auth import get_user_model

    from recommender import services
    from recommender.pages import figures as page_figures

    desom1 = versions.active_version(ModelVersion.DESOM1)
    desom2 = versions.active_version(ModelVersion.DESOM2)
    exposure = Exposure.objects.filter(is_science=True).order_by("expnum")[len(Exposure.objects.filter(is_science=True)) // 2]
    cells = list(CellAssignment.objects.filter(model_version=desom2).values_list("cell", flat=True))
    cell = max(set(cells), key=cells.count)
    node = int(exposure.vectors.get(model_version=desom1).histo_array.argmax())
    pages = {
        "health (baseline)": "/health/",
        "search": "/",
        "search page 3": "/?page=3",
        "search by cell": f"/?cell={cell}",
        "exposure": f"/exposures/{exposure.pk}/",
        "exposure preview.png": f"/exposures/{exposure.pk}/preview.png",
        "exposure density.png": f"/exposures/{exposure.pk}/density.png",
        "exposure histo.png": f"/exposures/{exposure.pk}/histo.png",
        "download confirm": f"/exposures/{exposure.pk}/download/confirm/",
        "desom1 map": "/maps/desom1/",
        "desom1 prototypes.png": "/maps/desom1/prototypes.png",
        "desom1 node": f"/maps/desom1/nodes/{node}/",
        "desom1 node prototype.png": f"/maps/desom1/nodes/{node}/prototype.png",
        "desom2 map": "/maps/desom2/",
        "desom2 cell": f"/maps/desom2/cells/{cell}/?seed=1",
        "upload form": "/search/upload/",
        "login": "/accounts/login/",
    }

    # Cold: no figure on disk, nothing loaded in the process.
    shutil.rmtree(Path(settings.ARCHIVE_DATA_DIR, "figures"), ignore_errors=True)
    page_figures.clear_cache()
    services.reset_store()
    versions.clear_cache()
    anonymous = Client()
    staff_user, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    staff = Client()
    staff.force_login(staff_user)

    results = {}
    for name, url in pages.items():
        first = timed(anonymous, url)
        warm = [timed(anonymous, url) for _ in range(args.repeat)]
        results[name] = {"url": url, "first_ms": round(first, 2), "warm_p50_ms": round(statistics.median(warm), 2),
                         "warm_p99_ms": round(percentile(warm, 99), 2), "warm_n": len(warm)}
    staff_cell = [timed(staff, f"/maps/desom2/cells/{cell}/?seed=1") for _ in range(args.repeat)]
    results["desom2 cell (staff, with form)"] = {"url": f"/maps/desom2/cells/{cell}/?seed=1", "first_ms": None,
                                                 "warm_p50_ms": round(statistics.median(staff_cell), 2),
                                                 "warm_p99_ms": round(percentile(staff_cell, 99), 2),
                                                 "warm_n": len(staff_cell)}
    base = results["health (baseline)"]["warm_p50_ms"]
    for row in results.values():
        row["warm_p50_over_health"] = round(row["warm_p50_ms"] / base, 1) if base else None
        row["under_target"] = row["warm_p50_ms"] < TARGET_WARM_MS

    report = {
        "benchmark": "pages",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "data": {"data_dir": str(data_dir), "exposures": Exposure.objects.count(),
                 "science": Exposure.objects.filter(is_science=True).count(),
                 "desom1_map": list(desom1.map_shape), "desom2_map": list(desom2.map_shape),
                 "built_now": built, "build_s": round(build_s, 1),
                 "survey_ccds": args.ccds or 4, "survey_ccd_shape": args.ccd_shape or "1024x512"},
        "settings": {"repeat": args.repeat, "client": "django.test.Client in-process", "database": "SQLite",
                     "target_warm_ms": TARGET_WARM_MS},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(n) for n in results)
    print(f"{'page':<{width}}  first ms   p50 ms   p99 ms   p50/health")
    for name, row in results.items():
        first = "" if row["first_ms"] is None else f"{row['first_ms']:9.1f}"
        print(f"{name:<{width}}  {first:>9} {row['warm_p50_ms']:8.1f} {row['warm_p99_ms']:8.1f} "
              f"{row['warm_p50_over_health']:10}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
