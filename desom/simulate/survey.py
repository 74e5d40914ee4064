"""A whole simulated survey: many exposures with a chosen mix of kinds, and its truth.csv."""
from __future__ import annotations

import csv
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields, asdict
from pathlib import Path

import numpy as np

from .exposure import ExposureTruth, check_geometry, simulate_exposure
from .params import CALIBRATION_KINDS, KINDS

# A realistic archive: mostly good, the rest spread over the bad kinds.
DEFAULT_MIX = {
    "good": 0.55,
    "bt": 0.07,
    "rbt": 0.05,
    "bad_seeing": 0.10,
    "bad_focus": 0.04,
    "bgp_crowded": 0.06,
    "bgp_low_exposure": 0.08,
    "bgp_pattern": 0.05,
}
# The demo survey: small CCDs so that 200 exposures take well under two minutes on 2 cores,
# still large enough (4 x 1024 x 512 px, ~21 arcmin^2) for a few hundred sources per exposure.
DEMO_SURVEY = {"n": 200, "n_ccds": 4, "ccd_shape": (1024, 512), "layout": "raw", "workers": 2}
# The science study's survey (benchmarks/bench_science.py): 36 CCDs as MegaCam has, each 704 x 640
# px (16 Mpx in all, 1.7 MegaCam CCDs), with the dust-free galaxy density raised from the
# default 45 to 150 per arcmin^2 (to r = 25.5). The default sky gives about 1 300 detections per
# 9.4 Mpx at the median exposure, below the few thousand a MegaCam CCD at high latitude holds;
# this one gives about 2 000 cutouts per exposure on average (after the 37 px edge cut), with
# about 0.2 other detected sources in a 32 x 32 stamp, so most stamps hold one source.
SCIENCE_SURVEY = {"n_ccds": 36, "ccd_shape": (704, 640), "galaxy_density": 150.0}
TRUTH_COLUMNS = [f.name for f in fields(ExposureTruth)]
FIRST_EXPNUM = 1000000


@dataclass
class SurveyConfig:
    """All the knobs of simulate_survey (which also takes them as keyword arguments)."""

    n: int = DEMO_SURVEY["n"]
    mix: dict | None = None
    seed: int = 0
    workers: int = 2
    n_ccds: int = DEMO_SURVEY["n_ccds"]
    ccd_shape: tuple = DEMO_SURVEY["ccd_shape"]
    layout: str = "raw"  # 'raw', 'processed' or 'mixed' (each exposure drawn 50/50)
    good_share: float | None = None
    include_calibration: int = 0  # number of extra BIAS / FLAT frames (alternating)
    dead_ccd_prob: float = 0.03
    mjd_range: tuple = (52700.0, 61340.0)  # 2003-02-24 .. 2026-10-27
    first_expnum: int = FIRST_EXPNUM
    severity_range: tuple = (0.0, 1.0)  # squeeze severities, e.g. (0.5, 1.0) for clearer kinds
    compress: bool = False  # write .fits.fz (RICE tile compression) instead of .fits
    galaxy_density: float | None = None  # dust-free galaxies per arcmin^2 (None: the simulator's)
    nuisances: bool = False  # what real exposures of every kind carry (desom.simulate.nuisances)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_mix(mix: dict | None = None, good_share: float | None = None) -> dict:
    """Normalised kind -> share. good_share fixes the share of 'good' and rescales the bad kinds
    (good_share=0.5 gives a balanced Good/Bad survey)."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds in mix: {sorted(unknown)}; expected some of {KINDS}")
    if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix shares must be non-negative and not all zero, got {mix}")
    total = sum(mix.values())
    mix = {k: v / total for k, v in mix.items() if v > 0}
    if good_share is not None:
        if not 0.0 <= good_share <= 1.0:
            raise ValueError(f"good_share must lie in [0, 1], got {good_share}")
        bad = {k: v for k, v in mix.items() if k != "good"}
        bad_total = sum(bad.values())
        if bad_total == 0 and good_share < 1:
            raise ValueError("good_share < 1 needs at least one bad kind in the mix")
        mix = {"good": good_share} if good_share > 0 else {}
        mix.update({k: (1 - good_share) * v / bad_total for k, v in bad.items()})
    return mix


def _kind_counts(n: int, mix: dict) -> dict:
    """Exact counts per kind (largest remainder), so shares hold even for small surveys."""
    kinds = list(mix)
    raw = np.array([mix[k] * n for k in kinds])
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return dict(zip(kinds, counts.tolist()))


def plan_survey(cfg: SurveyConfig) -> list[dict]:
    """The list of simulate_exposure jobs, deterministic from cfg.seed."""
    if cfg.n < 0 or cfg.include_calibration < 0:
        raise ValueError("n and include_calibration must be non-negative")
    if cfg.layout not in ("raw", "processed", "mixed"):
        raise ValueError(f"layout must be 'raw', 'processed' or 'mixed', got {cfg.layout!r}")
    check_geometry(cfg.n_ccds, cfg.ccd_shape)
    rng = np.random.default_rng(np.random.SeedSequence(int(cfg.seed), spawn_key=(0,)))
    counts = _kind_counts(cfg.n, resolve_mix(cfg.mix, cfg.good_share)) if cfg.n else {}
    kinds = [k for k, c in counts.items() for _ in range(c)]
    kinds += [CALIBRATION_KINDS[i % 2] for i in range(cfg.include_calibration)]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    # The odometer runs with time: sort the dates and number the exposures in that order.
    days = np.floor(rng.uniform(*cfg.mjd_range, len(kinds)))
    mjds = np.sort(days + rng.uniform(5.0 / 24, 15.5 / 24, len(kinds)))  # Hawaiian nights
    gaps = rng.integers(1, 4, len(kinds))
    expnums = cfg.first_expnum + np.cumsum(gaps)
    lo, hi = cfg.severity_range
    jobs = []
    for i, kind in enumerate(kinds):
        layout = cfg.layout if cfg.layout != "mixed" else ("raw" if rng.uniform() < 0.5 else "processed")
        severity = float(lo + (hi - lo) * rng.uniform()) if (lo, hi) != (0.0, 1.0) else None
        seed = int(np.random.SeedSequence(int(cfg.seed), spawn_key=(1, i)).generate_state(1)[0])
        expnum = int(expnums[i])
        jobs.append({
            "kind": kind, "seed": seed, "expnum": expnum, "mjd_obs": float(mjds[i]),
            "file": f"{expnum}{'o' if layout == 'raw' else 'p'}.fits{'.fz' if cfg.compress else ''}",
            "layout": layout,
            "severity": severity,
            "overrides": ({} if cfg.galaxy_density is None
                          else {"galaxy_density": float(cfg.galaxy_density)}),
            "nuisances": bool(cfg.nuisances),
        })
    return jobs


def _run_job(job: dict, outdir: str, n_ccds: int, ccd_shape, dead_ccd_prob: float) -> dict:
    truth = simulate_exposure(job["kind"], job["seed"], Path(outdir) / job["file"], n_ccds=n_ccds,
                              ccd_shape=tuple(ccd_shape), layout=job["layout"],
                              severity=job["severity"], expnum=job["expnum"],
                              mjd_obs=job["mjd_obs"], dead_ccd_prob=dead_ccd_prob,
                              overrides=job.get("overrides") or None, nuisances=job.get("nuisances", False))
    return truth.to_dict()


def _default_start_method() -> str:
    """'spawn' (safe beside threads and torch) unless __main__ cannot be re-imported by a
    spawned worker (stdin, an interactive session), where 'fork' is the only choice."""
    import sys
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and Path(main_file).exists():
        return "spawn"
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def write_truth_csv(rows: list[dict], path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: row[k] for k in TRUTH_COLUMNS})
    return path


def read_truth_csv(path) -> list[dict]:
    """Rows of a truth.csv with numbers converted back (int / float columns)."""
    types = {f.name: f.type for f in fields(ExposureTruth)}
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            conv = {}
            for k, v in row.items():
                t = types.get(k, "str")
                conv[k] = int(v) if t == "int" else float(v) if t == "float" else v
            out.append(conv)
    return out


def simulate_survey(n: int | None = None, outdir=None, mix: dict | None = None, seed: int = 0,
                    workers: int = 2, n_ccds: int = DEMO_SURVEY["n_ccds"],
                    ccd_shape=DEMO_SURVEY["ccd_shape"], layout: str = "raw",
                    good_share: float | None = None, include_calibration: int = 0,
                    progress: bool = True, dead_ccd_prob: float = 0.03,
                    compress: bool = False, config: SurveyConfig | None = None,
                    mp_context: str | None = None, galaxy_density: float | None = None,
                    nuisances: bool = False) -> Path:
    """Write n exposures (plus include_calibration BIAS/FLAT frames) into outdir and a
    truth.csv listing them in odometer order; returns the truth.csv path.

    Deterministic from seed: the same arguments give the same bytes, whatever `workers` is.
    Defaults are the demo survey's small CCDs (DEMO_SURVEY); pass n_ccds=36,
    ccd_shape=(4612, 2048) for full-size exposures. `config` replaces all keyword settings.
    Workers are processes ('spawn' by default; mp_context chooses another start method).
    nuisances: every exposure also carries what real ones do (desom.simulate.nuisances).
    """
    if config is None:
        if n is None:
            raise ValueError("simulate_survey needs n (or a SurveyConfig)")
        config = SurveyConfig(n=int(n), mix=mix, seed=seed, workers=workers, n_ccds=n_ccds,
                              ccd_shape=tuple(ccd_shape), layout=layout, good_share=good_share,
                              include_calibration=include_calibration, dead_ccd_prob=dead_ccd_prob,
                              compress=compress, galaxy_density=galaxy_density, nuisances=nuisances)
    if outdir is None:
        raise ValueError("simulate_survey needs an output directory")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = plan_survey(config)
    args = (str(outdir), config.n_ccds, tuple(config.ccd_shape), config.dead_ccd_prob)
    rows: list[dict | None] = [None] * len(jobs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc="simulating exposures", unit="exp")
    try:
        if config.workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                rows[i] = _run_job(job, *args)
                if bar is not None:
                    bar.update(1)
        else:
            ctx = mp.get_context(mp_context or _default_start_method())
            with ProcessPoolExecutor(max_workers=int(config.workers), mp_context=ctx) as pool:
                futures = {pool.submit(_run_job, job, *args): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    rows[futures[fut]] = fut.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return write_truth_csv(rows, outdir / "truth.csv")
