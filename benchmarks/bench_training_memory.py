"""Peak memory of DESOM-1 training at archive scale (issue 21).

    nice -n 15 .venv/bin/python -m benchmarks.bench_training_memory [--small 12] [--large 120]
        [--max-cutouts 20000] [--set-cutouts 1000000] [--baseline-commit COMMIT] [--quick]

Two measurements, each the peak resident set (ru_maxrss) of one `manage.py train_desom1`
process, read with resource.getrusage(RUSAGE_CHILDREN) in a small wrapper process that runs
only that command (so no other process's peak is mixed in):

1. Sampling from an archive: train_desom1 --from FILES on the first `--small` and on all
   `--large` exposures of one simulated survey (36 CCDs each, Good exposures, real source counts:
   a few thousand cutouts per exposure at 100 per CCD), at the same --max-cutouts, in-process
   (--workers 0: sampling and training in the one measured process) and a short training. The
   ratio large / small is the figure of merit: with memory bounded by the training set it stays
   near 1 whatever the archive's size.
   --baseline-commit runs the same two commands with the code of another commit (extracted with
   `git archive`), e.g. the one before this work, to show what it cost.
2. Training from disk: a synthetic set of `--set-cutouts` 32x32 cutouts written with
   desom.trainset (uint16, 2 KiB per cutout), then train_desom1 --from-set on it (paper
   architecture, a short run).

Writes benchmarks/results/training_memory.json (machine, commands, every figure)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs one command and writes the peak RSS of its process tree's largest process (KiB on
# Linux) and its exit status to the JSON file named first.
WRAPPER = ("import json, resource, subprocess, sys\n"
           "rc = subprocess.run(sys.argv[2:]).returncode\n"
           "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
           "open(sys.argv[1], 'w').write(json.dumps({'rc': rc, 'maxrss_kib': peak}))\n")
STAMPS = {"stamp_sky": "kept", "stretch": "asinh"}


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg())}
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_kib"] = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    return info


def measured(command: list[str], env: dict, cwd: Path) -> dict:
    """Run `command` under the wrapper: peak RSS (MiB), wall seconds and its stdout."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        report = Path(fh.name)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, str(report)] + command, env=env, cwd=cwd,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - started
    result = json.loads(report.read_text())
    report.unlink()
    if out.returncode or result["rc"]:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({result['rc']}):\n{out.stderr[-3000:]}")
    return {"peak_rss_mib": round(result["maxrss_kib"] / 1024, 1), "seconds": round(seconds, 1),
            "stdout": out.stdout}


def printed_metrics(stdout: str) -> dict:
    """The metrics JSON that train_desom1 prints after its one-line summary."""
    return json.loads(stdout[stdout.index("\n{") + 1:])


def fresh_archive(where: Path, code: Path) -> dict:
    """Environment of an empty archive (its own data folder and SQLite file), migrated."""
    where.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(where), "DATABASE_URL": f"sqlite:///{where / 'db.sqlite3'}",
           "ARCHIVE_DETECTOR": "sep", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run([sys.executable, str(code / "manage.py"), "migrate", "-v0"], env=env, cwd=code, check=True)
    return env


def archive_run(files: list[Path], args, work: Path, code: Path, label: str) -> dict:
    """train_desom1 --from FILES (in-process sampling, a short training): peak RSS and the set."""
    env = fresh_archive(work / f"data-{label}", code)
    keep = work / f"set-{label}"
    command = [sys.executable, str(code / "manage.py"), "train_desom1", "--per-ccd", "100",
               "--max-cutouts", str(args.max_cutouts), "--workers", "0", "--iterations", str(args.iterations),
               "--batch-size", "64", "--precision", "float32", "--no-order-gate", "--no-activate", "-v0",
               "--from"] + [str(f) for f in files]
    if code == REPO:   # the code under test keeps its set, so the run can say what it sampled
        command[3:3] = ["--save-set", str(keep)]
    run = measured(command, env, code)
    metrics = printed_metrics(run.pop("stdout"))
    row = {"exposures": len(files), "max_cutouts": args.max_cutouts, **run,
           "train_cutouts": metrics.get("train_cutouts"), "held_out_cutouts": metrics.get("held_out_cutouts")}
    if keep.is_dir():
        meta = json.loads((keep / "set.json").read_text())
        row.update(cutouts_sampled=meta["cutouts_seen"], cutouts_kept=meta["n_cutouts"],
                   cutouts_per_exposure=round(meta["cutouts_seen"] / len(files)),
                   sampled_float32_mib=round(meta["cutouts_seen"] * 32 * 32 * 4 / 2 ** 20, 1))
        shutil.rmtree(keep)
    shutil.rmtree(work / f"data-{label}", ignore_errors=True)
    return row


def synthetic_set(path: Path, n: int, seed: int = 0):
    """n 32x32 cutouts (round and elongated blobs on a noisy sky, in [0, 1]) written with
    desom.trainset in chunks: the bench process never holds more than one chunk either."""
    import numpy as np

    from desom.trainset import encode_unit, write_rows

    yy, xx = (np.mgrid[:32, :32] - 15.5).astype(np.float32)

    def codes(idx):
        rng = np.random.default_rng([seed, int(idx[0])])
        m = len(idx)
        sx = rng.uniform(1.2, 5.0, m).astype(np.float32)[:, None, None]
        sy = sx * rng.uniform(0.5, 1.0, m).astype(np.float32)[:, None, None]
        cx, cy = (rng.normal(0, 1.0, (2, m)).astype(np.float32)[..., None, None])
        blob = np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2)))
        blob *= rng.uniform(0.3, 0.9, m).astype(np.float32)[:, None, None]
        blob += 0.05 + rng.normal(0, 0.02, blob.shape).astype(np.float32)
        return encode_unit(np.clip(blob, 0, 1))

    order = np.arange(n)
    rows = np.zeros((n, 2), np.int32)
    rows[:, 1] = order
    meta = {"set_id": f"synthetic-{n}-{seed}", "exposures": ["synthetic"], "seed": seed, "stamps": STAMPS,
            "failures": [], "cutouts_seen": n}
    return write_rows(path, codes, order, rows, meta, progress=True)


def baseline_code(commit: str, work: Path, repo: Path) -> Path:
    """The tree of `commit` in a scratch folder (git archive: the repository is not touched)."""
    target = work / f"code-{commit[:10]}"
    target.mkdir()
    tar = subprocess.run(["git", "archive", "--format=tar", commit], cwd=repo, capture_output=True, check=True)
    archive = target / "tree.tar"
    archive.write_bytes(tar.stdout)
    with tarfile.open(archive) as tf:
        tf.extractall(target, filter="data")
    archive.unlink()
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=12, help="exposures in the small archive")
    parser.add_argument("--large", type=int, default=120, help="exposures in the large archive (10x: the "
                                                                "issue's 100 and 1000 are the same ratio)")
    parser.add_argument("--max-cutouts", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=10, help="DESOM-1 iterations of the archive runs")
    parser.add_argument("--set-cutouts", type=int, default=1_000_000)
    parser.add_argument("--set-iterations", type=int, default=50)
    parser.add_argument("--baseline-commit", default=None,
                        help="also measure the archive runs with this commit's code (e.g. aae20b0)")
    parser.add_argument("--baseline-repo", default=str(REPO), help="git repository holding that commit")
    parser.add_argument("--quick", action="store_true", help="4 and 12 exposures, a 100 000-cutout set")
    parser.add_argument("--tmp", default=None, help="scratch folder (needs ~45 MB per exposure, 2 KiB per cutout)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "training_memory.json"))
    args = parser.parse_args()
    if args.quick:
        args.small, args.large, args.max_cutouts, args.set_cutouts = 4, 12, 5000, 100_000
    if not 0 < args.small < args.large:
        parser.error("--small must be at least 1 and below --large")

    from desom.simulate import simulate_survey

    results = {"benchmark": "training_memory", "command": " ".join(["python", "-m", "benchmarks.bench_training_memory"]
                                                                   + sys.argv[1:]),
               "machine": machine_info(), "measure": "ru_maxrss of the train_desom1 process (RUSAGE_CHILDREN "
                                                       "of a wrapper that runs only it)"}
    work = Path(tempfile.mkdtemp(prefix="bench-training-memory-", dir=args.tmp))
    try:
        survey = work / "survey"
        started = time.perf_counter()
        simulate_survey(args.large, survey, seed=21, workers=2, n_ccds=36, ccd_shape=(1024, 512), good_share=1.0,
                        dead_ccd_prob=0.0, progress=True)
        files = sorted(survey.glob("*.fits"))
        results["survey"] = {"exposures": len(files), "n_ccds": 36, "ccd_shape": [1024, 512], "kinds": "good",
                             "simulate_seconds": round(time.perf_counter() - started, 1)}
        print(f"simulated {len(files)} exposures in {results['survey']['simulate_seconds']} s", flush=True)

        archive = {}
        for label, n in (("small", args.small), ("large", args.large)):
            archive[label] = archive_run(files[:n], args, work, REPO, label)
            print(f"{label}: {json.dumps(archive[label])}", flush=True)
        archive["large_over_small"] = round(archive["large"]["peak_rss_mib"] / archive["small"]["peak_rss_mib"], 3)
        results["archive"] = archive
        if args.baseline_commit:
            code = baseline_code(args.baseline_commit, work, Path(args.baseline_repo))
            base = {"commit": args.baseline_commit}
            for label, n in (("small", args.small), ("large", args.large)):
                base[label] = archive_run(files[:n], args, work, code, f"baseline-{label}")
                print(f"baseline {label}: {json.dumps(base[label])}", flush=True)
            base["large_over_small"] = round(base["large"]["peak_rss_mib"] / base["small"]["peak_rss_mib"], 3)
            results["baseline"] = base
        shutil.rmtree(survey)

        set_dir = work / "set-1m"
        started = time.perf_counter()
        ts = synthetic_set(set_dir, args.set_cutouts)
        written = round(time.perf_counter() - started, 1)
        disk = sum(p.stat().st_size for p in set_dir.iterdir())
        env = fresh_archive(work / "data-set", REPO)
        command = [sys.executable, str(REPO / "manage.py"), "train_desom1", "--from-set", str(set_dir),
                   "--iterations", str(args.set_iterations), "--batch-size", "256", "--precision", "float32",
                   "--no-order-gate", "--no-activate", "-v0"]
        run = measured(command, env, REPO)
        metrics = printed_metrics(run.pop("stdout"))
        results["from_set"] = {"cutouts": len(ts), "bytes_on_disk": disk, "float32_mib": round(len(ts) * 4096 / 2 ** 20, 1),
                               "write_seconds": written, "iterations": args.set_iterations, "batch_size": 256,
                               "architecture": "paper (conv 32/64/128, dense 512, latent 160, 25x25 map)", **run,
                               "train_cutouts": metrics.get("train_cutouts"),
                               "held_out_cutouts": metrics.get("held_out_cutouts")}
        print(f"from set: {json.dumps(results['from_set'])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")

    print(f"\n{'run':28s} {'exposures':>9s} {'sampled':>9s} {'kept':>7s} {'peak RSS MiB':>12s} {'s':>7s}")
    rows = [("archive " + k, v) for k, v in results["archive"].items() if isinstance(v, dict)]
    rows += [("baseline " + k, v) for k, v in (results.get("baseline") or {}).items() if isinstance(v, dict)]
    for name, r in rows:
        print(f"{name:28s} {r['exposures']:9d} {r.get('cutouts_sampled', '-')!s:>9s} {r.get('cutouts_kept', '-')!s:>7s} "
              f"{r['peak_rss_mib']:12.1f} {r['seconds']:7.1f}")
    print(f"large / small: {results['archive']['large_over_small']:.3f}")
    fs = results["from_set"]
    print(f"{'from set':28s} {fs['cutouts']:9d} {'':>9s} {'':>7s} {fs['peak_rss_mib']:12.1f} {fs['seconds']:7.1f}")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
