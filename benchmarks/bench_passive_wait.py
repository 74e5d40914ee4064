"""DESOM-1 training by the archive's own command beside another busy process, with the OpenMP
wait policy the entry points now choose (PASSIVE, desom/runtime.py) against libgomp's default
(spin, then sleep: what every command ran with before).

    .venv/bin/python -m benchmarks.bench_passive_wait [--iterations 60] [--busy 1]

A small simulated survey is sampled once into a training set (manage.py sample_cutouts); then
`manage.py train_desom1 --from-set SET --iterations N --fresh` runs under each policy, alone and
with --busy CPU-bound processes beside it, alternating the policies, best of --repeats. Writes
benchmarks/results/passive_wait.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.helpers import RESULTS, ROOT, machine_info, write_result

POLICIES = {"libgomp default (before)": "", "PASSIVE (now)": "PASSIVE"}   # "" reads as unset to libgomp


def manage(args, env, cwd=ROOT) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def busy_processes(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound processes running beside the command")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "passive_wait.json"))
    a = ap.parse_args(argv)
    from desom.simulate import simulate_survey

    with tempfile.TemporaryDirectory(prefix="passive-wait-") as tmp:
        tmp = Path(tmp)
        base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        base |= {"ARCHIVE_DATA_DIR": str(tmp / "data"), "DJANGO_SETTINGS_MODULE": "config.settings"}
        simulate_survey(6, tmp / "survey", seed=1, workers=1, progress=False)
        env = base | {"OMP_WAIT_POLICY": "PASSIVE"}
        manage(["migrate", "--noinput", "-v", "0"], env)
        manage(["sample_cutouts", str(tmp / "set"), "--from", str(tmp / "survey"), "--workers", "1", "-v", "0"], env)
        train = ["train_desom1", "--from-set", str(tmp / "set"), "--iterations", str(a.iterations), "--fresh",
                 "--no-activate", "--no-order-gate", "--checkpoint-every", str(10 * a.iterations), "-v", "0"]
        figures = {}
        for load in (0, a.busy):
            hogs = busy_processes(load)
            try:
                times = {name: [] for name in POLICIES}
                for _ in range(a.repeats):
                    for name, policy in POLICIES.items():
                        times[name].append(manage(train, base | {"OMP_WAIT_POLICY": policy}))
            finally:
                for h in hogs:
                    h.kill()
            best = {name: min(v) for name, v in times.items()}
            before, now = best["libgomp default (before)"], best["PASSIVE (now)"]
            figures[f"{load} busy"] = {"seconds": times, "best_seconds": best,
                                       "speedup_passive": round(before / now, 2)}
            print(f"{load} busy process(es): before {before:.1f} s, passive {now:.1f} s, x{before / now:.2f}")
    write_result(a.out, {"benchmark": "passive_wait", "command": " ".join(["python -m benchmarks.bench_passive_wait",
                                                                           *(argv or sys.argv[1:])]),
                         "machine": machine_info(), "iterations": a.iterations, "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
