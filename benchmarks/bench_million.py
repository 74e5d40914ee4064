"""Find-similar and filtered search end to end at archive scale (issue 20): a throw-away
PostgreSQL 15, N synthetic exposures bulk-loaded with everything those paths read, the FAISS
indexes built by the archive's own `manage.py build_index`, then API requests timed in-process
through Django's test client.

    nice -n 15 env OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_million
    ... benchmarks/bench_million.py --quick            # 20 000 exposures
    ... benchmarks/bench_million.py --n 200000 --requests 300

What is loaded (COPY, 50 000 rows a batch, never one ORM row at a time):
- exposures: pointings uniform on the sphere, MegaCam's nominal 0.96 x 0.94 deg footprint about
  each (s_region as the archive writes it) and its HEALPix index cells (`archive_skycell`),
  bands u g r i z, dates 2003-2024, exposure times, 36/40 CCDs, 400 observing runs, 15% still
  proprietary (release date in the future), 1% calibration frames (no vectors, no cells);
- one active DESOM-1 (25x25) and its 625-bin histo-vectors plus mean activations: Dirichlet
  draws about 300 exposure types, scaled by a lognormal source count, so near neighbours exist;
- one active DESOM-2 (20x20) and a cell per science exposure (its type's cell, 10% elsewhere),
  also on the exposure row (`desom2_cell`, as archive.services.versions.copy_active_cells keeps it),
  expert labels on 70% of the cells (about half Good), the rest left to the neighbours' guess;
- users: a staff curator and a non-staff user granted 20 runs, with an access token.

The footprints and their HEALPix cells are computed here with vectorised numpy (the archive's
per-row `desom.footprint.nominal_footprint` and `archive.geometry.cells_of` cost 1.7 ms a row);
a sample is checked against the archive's own functions and the agreement is recorded.

Timed (after a warm-up): GET /api/exposures/{id}/similar/ for random science exposures
(anonymous and with the token), and GET /api/exposures/ filtered by quality label and band, by a
cone, and by all three. p50 and p99 over --requests requests each. Also recorded: the load
average before starting, bulk-load time, pg_database_size, build_index wall time and peak RSS
(a child process), and where the time of a find-similar goes (--profile).

Writes benchmarks/results/million.json (or --out). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PGBIN = Path("/usr/lib/postgresql/15/bin")
BATCH = 50_000
MAP1 = (25, 25)
MAP2 = (20, 20)
N_TYPES = 300
BANDS = np.array(["u", "g", "r", "i", "z"])
FILTERS = {"u": "u.MP9302", "g": "g.MP9402", "r": "r.MP9602", "i": "i.MP9703", "z": "z.MP9901"}
N_RUNS = 400
PROPRIETARY_SHARE = 0.15
CALIBRATION_SHARE = 0.01
TARGET_P50_MS, TARGET_P99_MS = 20.0, 100.0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="exposures to load")
    p.add_argument("--quick", action="store_true", help="20 000 exposures, 100 requests")
    p.add_argument("--requests", type=int, default=300, help="timed requests per kind")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="stop timing a search kind after this many seconds (at least 50 requests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="PostgreSQL data and index files (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="leave the server stopped but its files in place")
    p.add_argument("--reuse", default=None, help="reuse a --keep'd workdir: skip the load and index build "
                                                 "(their figures are read from its load.json), migrate, time")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "million.json"))
    p.add_argument("--profile", action="store_true", help="also cProfile 50 find-similar, label + band and cone requests each")
    p.add_argument("--time-activation", action="store_true",
                   help="instead of the requests, time activating a second DESOM-2 (its cells "
                        "copied onto every exposure), re-activating the first, and re-activating it again")
    p.add_argument("--cone-pgsphere", action="store_true",
                   help="instead of the requests, compare the archive's cone (geometry.filter_region) with a "
                        "pgSphere GiST query over the same footprints: time and identical answers")
    p.add_argument("--relabel-reach", action="store_true",
                   help="only count the cells whose quality label one relabel changes (no database), print it")
    args = p.parse_args()
    if args.quick:
        args.n = min(args.n, 20_000) if "--n" in sys.argv else 20_000
        args.requests = min(args.requests, 100)
    return args


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))]


def summary(times_ms):
    return {"n": len(times_ms), "p50_ms": round(percentile(times_ms, 50), 2),
            "p90_ms": round(percentile(times_ms, 90), 2), "p99_ms": round(percentile(times_ms, 99), 2),
            "mean_ms": round(statistics.fmean(times_ms), 2), "max_ms": round(max(times_ms), 2),
            "meets_targets": percentile(times_ms, 50) < TARGET_P50_MS and percentile(times_ms, 99) < TARGET_P99_MS}


# ----------------------------------------------------------------------------- PostgreSQL

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        import shlex

        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(shlex.quote(c) for c in cmd)]
    return cmd


PG_SETTINGS = {
    # A throw-away server: durability off for the load (no effect on read timings).
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
    "shared_buffers": "1GB", "maintenance_work_mem": "512MB", "max_wal_size": "8GB",
    "checkpoint_timeout": "30min", "max_parallel_workers_per_gather": "0",
}


class Postgres:
    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.port = port or free_port()

    def init(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        subprocess.run(as_postgres([str(PGBIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                    "-E", "UTF8", "--no-sync"]), check=True, stdout=subprocess.DEVNULL)

    def start(self):
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir} " + " ".join(
            f"-c {k}={v}" for k, v in PG_SETTINGS.items())
        subprocess.run(as_postgres([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
                                    "-l", str(self.workdir / "pg.log"), "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(as_postgres([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def createdb(self, name):
        subprocess.run(as_postgres([str(PGBIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                    "-U", "postgres", name]), check=True)

    def url(self, name):
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


# ----------------------------------------------------------------------------- synthetic data

def nominal_corners(ra, dec, width=0.96, height=0.94):
    """MegaCam's nominal field about each pointing (vectorised gnomonic inverse of the TAN
    projection `desom.footprint.nominal_footprint` uses). Returns (n, 4, 2) degrees, in the
    vertex order that function gives (checked on a sample by `check_footprints`)."""
    hw, hh = width / 2, height / 2
    # astropy's order (-hw,-hh), (hw,-hh), (hw,hh), (-hw,hh) with CDELT1 = -1; orient() reverses
    # it for these fields (counter-clockwise on the sky seen from inside), starting at (-hw, hh)
    px = np.array([-hw, hw, hw, -hw])[::-1]
    py = np.array([-hh, -hh, hh, hh])[::-1]
    xi = np.radians(-px)[None, :]
    eta = np.radians(py)[None, :]
    ra0 = np.radians(ra)[:, None]
    dec0 = np.radians(dec)[:, None]
    denom = np.cos(dec0) - eta * np.sin(dec0)
    r = np.degrees(ra0 + np.arctan2(xi, denom)) % 360.0
    d = np.degrees(np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom)))
    return np.stack([r, d], axis=2)


def footprint_cells(corners, depth, grid=13):
    """HEALPix cells (nested, `depth`) each footprint touches, from a grid of points over the
    quadrilateral (bilinear in the projected plane) and its vertices; (rows, cells) pairs."""
    from cdshealpix import nested
    import astropy.units as u

    n = corners.shape[0]
    s = np.linspace(0.0, 1.0, grid)
    a, b = np.meshgrid(s, s)
    a, b = a.ravel(), b.ravel()
    # bilinear interpolation between the 4 corners on the unit sphere, then normalise
    ra, dec = np.radians(corners[..., 0]), np.radians(corners[..., 1])
    v = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)  # (n,4,3)
    w = np.stack([(1 - a) * (1 - b), a * (1 - b), a * b, (1 - a) * b], axis=1)  # (m,4)
    pts = np.einsum("mk,nkc->nmc", w, v)
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
    lon = np.degrees(np.arctan2(pts[..., 1], pts[..., 0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(pts[..., 2], -1, 1)))
    cells = nested.lonlat_to_healpix(lon.ravel() * u.deg, lat.ravel() * u.deg, depth).astype(np.int64)
    # depth-7 cells number below 2**20: one int64 key per (row, cell), unique in one sort
    keys = np.unique(np.repeat(np.arange(n, dtype=np.int64) << 32, cells.size // n) | cells)
    return np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1)


def check_footprints(rng, depth, n=400):
    """Compare the vectorised footprints and cells with the archive's own functions on a sample."""
    from archive import geometry
    from desom import footprint as fp

    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-0.99, 0.99, n)))
    corners = nominal_corners(ra, dec)
    pairs = footprint_cells(corners, depth)
    worst, same_cells, missed, extra, fov = 0.0, 0, 0, 0, None
    for i in range(n):
        ref = fp.nominal_footprint(ra[i], dec[i])
        fov = ref.fov_deg
        mine = fp.from_dali(fp.to_dali([tuple(c) for c in corners[i]]))
        theirs = fp.from_dali(fp.to_dali(ref.polygon))
        worst = max(worst, max(fp.angular_distance(*p, *q) for p, q in zip(mine, theirs)) if len(mine) == len(theirs)
                    else 180.0)
        ref_cells = set(geometry.cells_of(ref.polygon))
        my_cells = set(pairs[pairs[:, 0] == i, 1].tolist())
        same_cells += ref_cells == my_cells
        missed += len(ref_cells - my_cells)
        extra += len(my_cells - ref_cells)
    return {"sample": n, "max_vertex_offset_deg": worst, "cell_sets_identical": same_cells,
            "cells_missed": int(missed), "cells_extra": int(extra), "fov_deg": fov}


class Synth:
    def __init__(self, n, seed):
        self.n = n
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        n_nodes = MAP1[0] * MAP1[1]
        self.types = rng.dirichlet(np.full(n_nodes, 0.15), size=N_TYPES)
        self.type_cell = rng.integers(0, MAP2[0] * MAP2[1], N_TYPES)

    def chunk(self, start, stop):
        rng = self.rng
        m = stop - start
        ids = np.arange(start + 1, stop + 1, dtype=np.int64)
        ra = rng.uniform(0, 360, m)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1, m)))
        band = BANDS[rng.integers(0, 5, m)]
        mjd = rng.uniform(52640.0, 60310.0, m)  # 2003-2024
        exptime = rng.choice([30.0, 60.0, 120.0, 300.0, 600.0], m)
        runs = rng.integers(0, N_RUNS, m)
        science = rng.random(m) >= CALIBRATION_SHARE
        proprietary = rng.random(m) < PROPRIETARY_SHARE
        typ = rng.integers(0, N_TYPES, m)
        n_detected = np.maximum(50, rng.lognormal(np.log(3000), 0.6, m)).astype(np.int64)
        # histo-vector: a noisy draw about the type's profile, scaled to the sources detected
        conc = 300.0
        gam = rng.gamma(self.types[typ] * conc + 1e-3)
        shares = gam / gam.sum(axis=1, keepdims=True)
        histo = (shares * n_detected[:, None]).astype(np.float32)
        grid = shares.reshape(m, *MAP1)
        blurred = (grid + np.roll(grid, 1, 1) + np.roll(grid, -1, 1) + np.roll(grid, 1, 2) + np.roll(grid, -1, 2)) / 5
        activations = blurred.reshape(m, -1).astype(np.float32)
        cell = self.type_cell[typ].copy()
        moved = rng.random(m) < 0.10
        cell[moved] = rng.integers(0, MAP2[0] * MAP2[1], moved.sum())
        return dict(ids=ids, ra=ra, dec=dec, band=band, mjd=mjd, exptime=exptime, runs=runs, science=science,
                    proprietary=proprietary, n_detected=n_detected, histo=histo, activations=activations, cell=cell,
                    quantization=rng.gamma(2.0, 0.05, m))


def mjd_to_iso(mjd):
    epoch = np.datetime64("1858-11-17T00:00:00", "s")
    return (epoch + (mjd * 86400).astype("timedelta64[s]")).astype(str)


def copy_rows(cursor, table, columns, lines):
    buf = io.StringIO("".join(lines))
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)


# ----------------------------------------------------------------------------- the run

def load(args, timings):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from archive import geometry
    from archive.models import CellLabel, ModelVersion, QUALITY_LABELS, RunAccess
    from archive.services import tokens

    now = timezone.now()
    today = now.date()
    desom1 = ModelVersion.objects.create(version_id="bench-desom1", kind=ModelVersion.DESOM1,
                                         checkpoint_path="none", is_active=True, activated_at=now,
                                         config={"map_rows": MAP1[0], "map_cols": MAP1[1]})
    desom2 = ModelVersion.objects.create(version_id="bench-desom2", kind=ModelVersion.DESOM2,
                                         checkpoint_path="none", is_active=True, activated_at=now, trained_on=desom1,
                                         config={"map_rows": MAP2[0], "map_cols": MAP2[1], "normaliser": "hellinger"})
    synth = Synth(args.n, args.seed)
    fp_check = check_footprints(np.random.default_rng(args.seed + 1), geometry.DEPTH)
    log(f"footprint check: {fp_check}")
    fov = fp_check["fov_deg"]
    stamp = now.isoformat()
    exposure_cols = ["id", "expnum", "filename", "file_path", "file_size", "checksum", "obstype", "is_science",
                     "layout", "object_name", "ra_deg", "dec_deg", "sky_x", "sky_y", "sky_z", "s_region",
                     "footprint_kind", "s_fov", "mjd_obs", "date_obs", "exptime", "filter_name", "band", "airmass",
                     "instrument", "n_ccds", "runid", "n_detected", "n_sampled", "status", "warnings", "timings",
                     "release_date", "desom2_cell", "ingested_at", "updated_at"]
    vector_cols = ["exposure_id", "model_version_id", "histo", "activations", "n_detected", "created_at"]
    cell_cols = ["exposure_id", "model_version_id", "cell", "quantization", "created_at"]
    counts = {"exposures": 0, "science": 0, "proprietary": 0, "vectors": 0, "cells": 0, "sky_cells": 0}
    started = time.perf_counter()
    gen_s = 0.0
    with connection.cursor() as cur:
        for start in range(0, args.n, BATCH):
            stop = min(args.n, start + BATCH)
            t0 = time.perf_counter()
            c = synth.chunk(start, stop)
            corners = nominal_corners(c["ra"], c["dec"])
            pairs = footprint_cells(corners, geometry.DEPTH)
            dali = [" ".join(f"{r:.7f} {d:.7f}" for r, d in poly) for poly in corners]
            rr, dd = np.radians(c["ra"]), np.radians(c["dec"])
            sky = np.stack([np.cos(dd) * np.cos(rr), np.cos(dd) * np.sin(rr), np.sin(dd)], axis=1)
            dates = mjd_to_iso(c["mjd"])
            obs_day = c["mjd"].astype("int64").astype("timedelta64[D]") + np.datetime64("1858-11-17", "D")
            today64 = np.datetime64(today.isoformat(), "D")
            release = np.where(c["proprietary"], today64 + 200,
                               np.minimum(obs_day + 365, today64 - 1)).astype(str)
            lines = []
            for i in range(stop - start):
                pk = int(c["ids"][i])
                expnum = 700000 + pk
                b = c["band"][i]
                sci = bool(c["science"][i])
                lines.append("\t".join((
                    str(pk), str(expnum), f"{expnum}o.fits.fz", f"/archive/raw/{expnum // 1000}/{expnum}o.fits.fz",
                    "712000000", f"{pk:064x}", "OBJECT" if sci else "FLAT", "t" if sci else "f", "raw",
                    f"FIELD{int(c['runs'][i]) % 97:02d}", repr(float(c["ra"][i])), repr(float(c["dec"][i])),
                    repr(float(sky[i, 0])), repr(float(sky[i, 1])), repr(float(sky[i, 2])), dali[i], "nominal",
                    repr(fov), repr(float(c["mjd"][i])), dates[i] + "+00", repr(float(c["exptime"][i])), FILTERS[b],
                    b, "1.2", "MegaPrime", "36" if pk % 5 else "40", f"{2003 + int(c['runs'][i]) // 20}A{int(c['runs'][i]):03d}",
                    str(int(c["n_detected"][i]) if sci else 0), str(3600 if sci else 0), "ok", "[]", "{}",
                    release[i], str(int(c["cell"][i])) if sci else "\\N", stamp, stamp)) + "\n")
                counts["proprietary"] += bool(c["proprietary"][i])
            vlines, clines = [], []
            for i in np.flatnonzero(c["science"]):
                pk = int(c["ids"][i])
                vlines.append(f"{pk}\t{desom1.pk}\t\\\\x{c['histo'][i].astype('<f4').tobytes().hex()}\t"
                              f"\\\\x{c['activations'][i].astype('<f4').tobytes().hex()}\t{int(c['n_detected'][i])}\t{stamp}\n")
                clines.append(f"{pk}\t{desom2.pk}\t{int(c['cell'][i])}\t{float(c['quantization'][i]):.5f}\t{stamp}\n")
            slines = [f"{int(c['ids'][r])}\t{int(cell)}\n" for r, cell in pairs]
            gen_s += time.perf_counter() - t0
            copy_rows(cur, "archive_exposure", exposure_cols, lines)
            copy_rows(cur, "archive_exposurevector", vector_cols, vlines)
            copy_rows(cur, "archive_cellassignment", cell_cols, clines)
            copy_rows(cur, "archive_skycell", ["exposure_id", "cell"], slines)
            counts["exposures"] += len(lines)
            counts["vectors"] += len(vlines)
            counts["science"] += len(vlines)
            counts["cells"] += len(clines)
            counts["sky_cells"] += len(slines)
            log(f"loaded {stop}/{args.n} exposures ({time.perf_counter() - started:.0f} s)")
        for table in ("archive_exposure", "archive_exposurevector", "archive_cellassignment", "archive_skycell"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        timings["copy_s"] = round(time.perf_counter() - started, 1)
        timings["of_which_generating_rows_s"] = round(gen_s, 1)
        t0 = time.perf_counter()
        cur.execute("VACUUM ANALYZE")
        timings["vacuum_analyze_s"] = round(time.perf_counter() - t0, 1)
        # the loaded copy of each exposure's cell is what versions.copy_active_cells would write
        cur.execute("SELECT count(*) FROM archive_exposure e LEFT JOIN archive_cellassignment a ON a.exposure_id = e.id "
                    "AND a.model_version_id = %s WHERE e.desom2_cell IS DISTINCT FROM a.cell", [desom2.pk])
        counts["desom2_cell_differing_from_assignment"] = cur.fetchone()[0]
    # labels: 70% of the cells by an expert, about half Good, a few mixed
    rng = np.random.default_rng(args.seed + 2)
    n_cells = MAP2[0] * MAP2[1]
    labelled = rng.choice(n_cells, int(0.7 * n_cells), replace=False)
    kinds = ["Good"] * 7 + [lab for lab in QUALITY_LABELS if lab != "Good"] + ["mixed"]
    CellLabel.objects.bulk_create([CellLabel(model_version=desom2, cell=int(cell), label=kinds[rng.integers(len(kinds))])
                                   for cell in labelled])
    User = get_user_model()
    User.objects.create_user("curator", password="x", is_staff=True)
    user = User.objects.create_user("observer", password="x")
    runids = sorted({f"{2003 + r // 20}A{r:03d}" for r in rng.choice(N_RUNS, 20, replace=False)})
    RunAccess.objects.bulk_create([RunAccess(user=user, runid=r) for r in runids])
    _, secret = tokens.issue_token(user, name="bench")
    return counts, fp_check, secret


def relabel_reach(seed: int, share: float, trials: int = 200) -> dict:
    """What storing each exposure's effective label (instead of its cell) would cost per
    relabel: how many cells' labels (CellQualityMap's rule: the expert's, else a confident
    neighbours' guess) change when one cell is relabelled, on this benchmark's label layout
    with `share` of the cells labelled (0.7 is the loaded one). Each changed cell's members
    would be rewritten; with a cell column a relabel rewrites nothing."""
    from archive.models import ModelVersion, QUALITY_LABELS
    from archive.services import quality

    desom2 = ModelVersion(kind=ModelVersion.DESOM2, config={"map_rows": MAP2[0], "map_cols": MAP2[1]})
    n_cells = MAP2[0] * MAP2[1]
    rng = np.random.default_rng(seed + 2)
    kinds = ["Good"] * 7 + [lab for lab in QUALITY_LABELS if lab != "Good"] + ["mixed"]
    labels = {int(c): kinds[rng.integers(len(kinds))] for c in rng.choice(n_cells, int(share * n_cells), replace=False)}

    def effective(texts):
        qmap = quality.CellQualityMap(texts, *quality.label_probabilities(desom2, labels=texts))
        return [qmap.label(c)[0] for c in range(n_cells)]

    before = effective(labels)
    changed = []
    for _ in range(trials):
        relabelled = labels | {int(rng.integers(n_cells)): kinds[rng.integers(len(kinds))]}
        changed.append(sum(a != b for a, b in zip(before, effective(relabelled))))
    return {"labelled_share": share, "trials": trials, "cells_changed_mean": round(float(np.mean(changed)), 2),
            "cells_changed_p90": int(np.percentile(changed, 90)), "cells_changed_max": int(max(changed)),
            "exposures_per_cell_at_1m": round(1_000_000 * (1 - CALIBRATION_SHARE) / n_cells)}


def compare_cone_pgsphere(seed: int, cones: int = 15) -> dict:
    """The archive's cone (sky cells, then the exact footprint test in numpy) against one
    pgSphere query over the GiST index of the footprints that TAP installs
    (recommender.vo.tap: desom_spoly), on the same random cones: median times and whether the
    two answers are the same set of exposures."""
    from django.db import connection

    from archive import geometry
    from archive.models import Exposure
    from recommender.vo import tap

    if not tap.install():
        return {"skipped": "pgSphere is not available on this server"}
    with connection.cursor() as cur:
        cur.execute("ANALYZE archive_exposure")
    rng = np.random.default_rng(seed + 11)
    out = {"cones_per_radius": cones}
    for radius in (1.0, 2.0, 5.0):
        sphere_ms, archive_ms, same, sizes = [], [], 0, []
        for _ in range(cones):
            ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
            t = time.perf_counter()
            with connection.cursor() as cur:
                cur.execute("SELECT id FROM archive_exposure WHERE desom_spoly(NULLIF(s_region, '')) "
                            "&& scircle(spoint(radians(%s), radians(%s)), radians(%s))", [ra, dec, radius])
                sphere = {row[0] for row in cur.fetchall()}
            sphere_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            ours = set(geometry.filter_region(Exposure.objects.all(), [geometry.Circle(ra, dec, radius)])
                       .values_list("pk", flat=True))
            archive_ms.append((time.perf_counter() - t) * 1000)
            same += sphere == ours
            sizes.append(len(ours))
        out[f"radius_{radius:g}"] = {"pgsphere_median_ms": float(np.median(sphere_ms)),
                                     "filter_region_median_ms": float(np.median(archive_ms)),
                                     "identical_answers": same, "median_matches": float(np.median(sizes))}
        log(f"cone radius {radius}: {out[f'radius_{radius:g}']}")
    return out


def time_activation() -> dict:
    """activate_version for a second DESOM-2 whose cells differ from the loaded one's for every
    exposure, then the loaded one again, then once more (nothing to change); after each, how
    many exposures' copy (desom2_cell) differs from their assignment under the active version.
    The second version and its cells are deleted afterwards."""
    from django.db import connection

    from archive.models import ModelVersion
    from archive.services import versions

    out = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    loaded = versions.active_version(ModelVersion.DESOM2)
    other = ModelVersion.objects.create(version_id="bench-desom2-other", kind=ModelVersion.DESOM2,
                                        checkpoint_path="none", trained_on=loaded.trained_on, config=loaded.config)
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("INSERT INTO archive_cellassignment (exposure_id, model_version_id, cell, quantization, created_at) "
                    "SELECT exposure_id, %s, (cell * 7 + 3) %% %s, quantization, created_at FROM archive_cellassignment "
                    "WHERE model_version_id = %s", [other.pk, MAP2[0] * MAP2[1], loaded.pk])
        cur.execute("ANALYZE archive_cellassignment")
    out["insert_other_versions_cells_s"] = round(time.perf_counter() - t0, 1)

    def differing(version) -> int:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM archive_exposure e LEFT JOIN archive_cellassignment a "
                        "ON a.exposure_id = e.id AND a.model_version_id = %s WHERE e.desom2_cell IS DISTINCT FROM a.cell",
                        [version.pk])
            return cur.fetchone()[0]

    for name, version in (("activate_other", other), ("reactivate_loaded", loaded), ("reactivate_unchanged", loaded)):
        version.refresh_from_db()
        t0 = time.perf_counter()
        versions.activate_version(version)
        out[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        out[f"{name}_copies_differing_after"] = differing(version)
        log(f"{name}: {out[f'{name}_s']} s")
    other.delete()
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def build_indexes(env):
    """The archive's own command, as a child process: wall time and its peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "manage.py"), "build_index", "--force", "--verbosity", "1"],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"build_index failed:\n{proc.stdout}\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(max(peak, before) / 1024, 1),
            "output": proc.stdout.strip().splitlines()}


def time_requests(client, urls, warmup, headers=None, check=None, budget_s=None, minimum=50):
    """Time GETs of urls[warmup:]; with budget_s, stop once it is spent (after `minimum`)."""
    headers = headers or {}
    for url in urls[:warmup]:
        client.get(url, **headers)
    times, sizes = [], []
    started = time.perf_counter()
    for url in urls[warmup:]:
        if budget_s and len(times) >= minimum and time.perf_counter() - started > budget_s:
            break
        t0 = time.perf_counter()
        response = client.get(url, **headers)
        body = response.content
        times.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {body[:300]!r}")
        if check is not None:
            sizes.append(check(json.loads(body)))
    out = summary(times)
    if sizes:
        out["results_per_request_median"] = statistics.median(sizes)
    return out


def main() -> int:
    args = parse_args()
    if args.relabel_reach:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
        print(json.dumps([relabel_reach(args.seed, share) for share in (0.05, 0.2, 0.7)], indent=2))
        return 0
    load_before = os.getloadavg()
    log(f"load average before: {load_before}")
    reuse = Path(args.reuse).resolve() if args.reuse else None
    workdir = reuse or Path(args.workdir or tempfile.mkdtemp(prefix="bench-million-", dir="/tmp")).resolve()
    pg = Postgres(workdir)
    timings: dict = {}
    result: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "n_requested": args.n,
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "python": platform.python_version(),
                                "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                "nice": os.nice(0)},
                    "load_average_before": [round(x, 2) for x in load_before],
                    "postgres": {"version": 15, "settings": PG_SETTINGS}, "targets_ms": {"p50": TARGET_P50_MS,
                                                                                         "p99": TARGET_P99_MS}}
    if reuse is None:
        log(f"PostgreSQL in {workdir}")
        pg.init()
    pg.start()
    try:
        if reuse is None:
            pg.createdb("archive")
        env = dict(os.environ, DATABASE_URL=pg.url("archive"), ARCHIVE_DATA_DIR=str(workdir / "data"),
                   DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", SECRET_KEY="benchmark-only",
                   SECURE_SSL_REDIRECT="0", ALLOWED_HOSTS="testserver,localhost")
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        if reuse is None:
            t0 = time.perf_counter()
            call_command("migrate", verbosity=0)
            timings["migrate_s"] = round(time.perf_counter() - t0, 1)
            counts, fp_check, secret = load(args, timings)
            (workdir / "token").write_text(secret)
            result["rows"] = counts
            result["footprint_check"] = fp_check
            log(f"loaded: {counts} {timings}")
            result["bulk_load"] = timings
            log("building the indexes (manage.py build_index --force)")
            result["build_index"] = build_indexes(env)
            log(f"build_index: {result['build_index']}")
            (workdir / "load.json").write_text(json.dumps({k: result[k] for k in (
                "command", "load_average_before", "rows", "footprint_check", "bulk_load", "build_index")}, indent=2))
        else:
            # the load and the index build of an earlier run (--keep), then any migration added since
            secret = (workdir / "token").read_text()
            result["reused_workdir"] = str(workdir)
            result["loaded_by"] = json.loads((workdir / "load.json").read_text())
            t0 = time.perf_counter()
            call_command("migrate", verbosity=0)
            result["migrate_on_reuse_s"] = round(time.perf_counter() - t0, 1)
            # A migration that rewrote rows leaves their pages not all-visible (no index-only
            # scans) until autovacuum has passed, as it has on a server that has run a while.
            t0 = time.perf_counter()
            with connection.cursor() as cur:
                cur.execute("VACUUM ANALYZE")
            result["vacuum_analyze_after_migrate_s"] = round(time.perf_counter() - t0, 1)
        with connection.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            result["database_bytes"] = cur.fetchone()[0]
            cur.execute("SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
                        "ORDER BY 2 DESC LIMIT 6")
            result["largest_tables_bytes"] = dict(cur.fetchall())
        index_files = sorted((workdir / "data" / "indexes").glob("*.faiss"))
        result["index_files_bytes"] = {p.name: p.stat().st_size for p in index_files}
        if args.time_activation:
            result["activation"] = time_activation()
        elif args.cone_pgsphere:
            result["cone_pgsphere"] = compare_cone_pgsphere(args.seed)
        else:
            result["timings"] = run_requests(args, secret)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        from django.db import connections

        connections.close_all()
        pg.stop()
        if not args.keep and reuse is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {out}")
    print(json.dumps(result.get("timings", result.get("activation")), indent=2))
    return 0


def run_requests(args, secret):
    from django.test import Client

    from archive.models import Exposure

    rng = np.random.default_rng(args.seed + 3)
    n_urls = args.warmup + args.requests
    # random ids, keeping the public science ones (order_by("?") would sort the whole table)
    candidates = rng.integers(1, args.n + 1, n_urls * 4)
    visible = set(Exposure.objects.filter(pk__in=candidates.tolist(), is_science=True,
                                          release_date__lte=time.strftime("%Y-%m-%d")).values_list("pk", flat=True))
    public = [int(c) for c in candidates if int(c) in visible][:n_urls]
    anonymous, tokened = Client(), Client()
    auth = {"HTTP_AUTHORIZATION": f"Token {secret}"}
    timings = {}
    count = lambda body: len(body["results"])  # noqa: E731
    log("timing find-similar")
    urls = [f"/api/exposures/{pk}/similar/?k=10" for pk in public]
    timings["similar_anonymous"] = time_requests(anonymous, urls, args.warmup, check=count, budget_s=args.budget_s)
    log(f"similar anonymous: {timings['similar_anonymous']}")
    timings["similar_token"] = time_requests(tokened, urls, args.warmup, auth, check=count, budget_s=args.budget_s)
    log(f"similar token: {timings['similar_token']}")
    labels = ["Good", "BT", "B-Seeing", "RBT"]

    def cone():
        ra = rng.uniform(0, 360)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1)))
        return f"ra={ra:.4f}&dec={dec:.4f}&radius={rng.choice([1.0, 2.0, 5.0])}"

    kinds = {
        "search_label_band": lambda: f"/api/exposures/?label={rng.choice(labels)}&band={rng.choice(BANDS)}",
        "search_cone": lambda: f"/api/exposures/?{cone()}",
        "search_label_band_cone": lambda: f"/api/exposures/?label={rng.choice(labels)}&band={rng.choice(BANDS)}&{cone()}",
        "similar_filtered_label_band": lambda: f"/api/exposures/{rng.choice(public)}/similar/?k=10&label=Good&band={rng.choice(BANDS)}",
    }
    for name, make in kinds.items():
        log(f"timing {name}")
        urls = [make() for _ in range(n_urls)]
        timings[name] = time_requests(tokened, urls, min(args.warmup, 10), auth, check=count, budget_s=args.budget_s)
        timings[name]["example"] = urls[-1]
        log(f"{name}: {timings[name]}")
    if args.profile:
        timings["profile_similar"] = profile(tokened, [f"/api/exposures/{pk}/similar/?k=10" for pk in public[:50]], auth)
        for name in ("search_label_band", "search_cone"):
            timings[f"profile_{name}"] = profile(tokened, [kinds[name]() for _ in range(50)], auth)
    return timings


def profile(client, urls, headers):
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for url in urls:
        client.get(url, **headers)
    prof.disable()
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("cumulative").print_stats(25)
    print(stream.getvalue())
    return stream.getvalue().splitlines()[:60]


if __name__ == "__main__":
    sys.exit(main())
