"""Run every benchmark script in this folder, one after another, each writing its own
benchmarks/results/<name>.json. `--quick` passes --quick to those that take it.

Benchmarks are never part of `make test`: they measure, they do not judge."""
import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Order: cheap first, so a partial run still leaves figures.
ORDER = ["bench_simulate", "bench_imaging", "bench_desom_speed", "bench_desom_peer", "bench_faiss",
         "bench_pages", "bench_load", "bench_science"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs where a script supports it")
    parser.add_argument("--only", nargs="*", default=None, help="names such as bench_faiss")
    args = parser.parse_args()
    scripts = [HERE / f"{name}.py" for name in ORDER if (HERE / f"{name}.py").exists()]
    scripts += sorted(p for p in HERE.glob("bench_*.py") if p.stem not in ORDER)
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only]
    failed = []
    for script in scripts:
        command = [sys.executable, "-m", f"benchmarks.{script.stem}"]
        if args.quick and "--quick" in script.read_text():
            command.append("--quick")
        started = time.perf_counter()
        print(f"== {script.name}: {' '.join(command[1:])}", flush=True)
        result = subprocess.run(command, cwd=HERE.parent)
        print(f"== {script.name}: exit {result.returncode} after {time.perf_counter() - started:.0f} s", flush=True)
        if result.returncode:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
