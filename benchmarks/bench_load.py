"""Load test on loopback against the production server: find-similar with 50 concurrent clients.

Builds a small demo archive in a temporary ARCHIVE_DATA_DIR (or reuses --data-dir), then, for
each worker count of --workers (default 1 and 2, alternated over --rounds rounds), starts the
real server as `make serve` does (gunicorn with config/gunicorn.conf.py, DEBUG off, static files
collected, memory-mapped indexes) on 127.0.0.1 and drives it with Python threads using
http.client: first one client alone (the baseline), then --clients at once. Every request is
checked (HTTP 200, JSON with results). Bounded in count (--requests per client) and in time
(--time-limit). Writes throughput, p50/p99, errors, the workers' memory and the machine's load
average (other jobs on the machine distort the figures: read them with it) to
benchmarks/results/load.json.

    .venv/bin/python -m benchmarks.bench_load                # builds the demo archive first
    .venv/bin/python -m benchmarks.bench_load --data-dir var/load-demo --clients 50
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "load.json"
PYTHON = sys.executable
HOST = "127.0.0.1"

PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "load-benchmark-only-" + "x" * 40, "ALLOWED_HOSTS": "127.0.0.1",
              "SECURE_SSL_REDIRECT": "0", "GUNICORN_ACCESS_LOG": "/dev/null", "LOG_LEVEL": "warning"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def build_demo(data_dir: Path, env: dict, exposures: int) -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "manage.py", "demo", "--no-serve", "--exposures", str(exposures),
                    "--desom1-iterations", "40", "--desom2-iterations", "200"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def get(port: int, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port: int, process, limit: float = 60.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited before answering")
        try:
            if get(port, "/health/", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not answer /health/ in time")


def request_plan(ids, n_nodes, count, seed, mix="similar"):
    rng = random.Random(seed)
    plan = []
    for i in range(count):
        if mix == "similar" or i % 2 == 0:
            plan.append(("similar", f"/api/exposures/{rng.choice(ids)}/similar/?k=10"))
        else:
            nodes = ",".join(str(n) for n in rng.sample(range(n_nodes), 3))
            plan.append(("search", f"/api/search/prototypes/?nodes={nodes}&k=10"))
    return plan


def run_clients(port, plans, time_limit):
    """Each plan runs in its own thread; returns [(kind, seconds, ok, detail)]."""
    records, lock = [], threading.Lock()
    stop_at = time.perf_counter() + time_limit
    barrier = threading.Barrier(len(plans))

    def client(plan):
        barrier.wait()
        for kind, path in plan:
            if time.perf_counter() > stop_at:
                return
            t0 = time.perf_counter()
            try:
                status, body = get(port, path)
                ok = status == 200 and "results" in json.loads(body)
                detail = "" if ok else f"HTTP {status}: {body[:120]!r}"
            except Exception as exc:  # a client error is what this test counts
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            with lock:
                records.append((kind, time.perf_counter() - t0, ok, detail))

    threads = [threading.Thread(target=client, args=(plan,)) for plan in plans]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records, time.perf_counter() - start


def summarise(records, wall):
    out = {"requests": len(records), "errors": sum(not ok for _, _, ok, _ in records),
           "wall_s": round(wall, 3), "throughput_rps": round(len(records) / wall, 2) if wall else None}
    for kind in ("similar", "search", "all"):
        times = np.array([t for k, t, ok, _ in records if ok and (kind == "all" or k == kind)]) * 1000
        if len(times):
            out[kind] = {"n": int(len(times)), "p50_ms": round(float(np.percentile(times, 50)), 2),
                         "p99_ms": round(float(np.percentile(times, 99)), 2),
                         "max_ms": round(float(times.max()), 2)}
    failures = sorted({d for _, _, ok, d in records if not ok})
    if failures:
        out["error_samples"] = failures[:5]
    return out


def start_server(env, workers: int):
    port = free_port()
    server_env = {**env, **PRODUCTION, "WEB_CONCURRENCY": str(workers), "BIND": f"{HOST}:{port}"}
    process = subprocess.Popen([PYTHON, "-m", "gunicorn", "--config", "config/gunicorn.conf.py",
                                "config.wsgi:application"], cwd=ROOT, env=server_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, process, limit=180)
    return port, process


def worker_memory(master_pid: int) -> list[dict]:
    out = []
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    except OSError:
        return out
    for pid in children:
        values = {}
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                parts = line.split()
                if parts[0] in ("Rss:", "Pss:", "Anonymous:"):
                    values[parts[0][:-1].lower() + "_mib"] = round(int(parts[1]) / 1024, 1)
        except OSError:
            continue
        out.append(values)
    return out


def measure(env, workers, ids, n_nodes, args, seed_offset):
    port, server = start_server(env, workers)
    try:
        # Warm every worker (each maps the indexes on its first search) before timing anything.
        warm = [request_plan(ids, n_nodes, 6, seed=90 + i, mix=args.mix) for i in range(4 * workers)]
        run_clients(port, warm, args.time_limit)
        baseline, baseline_wall = run_clients(
            port, [request_plan(ids, n_nodes, args.baseline_requests, seed_offset, mix=args.mix)], args.time_limit)
        plans = [request_plan(ids, n_nodes, args.requests, seed_offset + seed, mix=args.mix)
                 for seed in range(1, args.clients + 1)]
        load_before = os.getloadavg()
        loaded, loaded_wall = run_clients(port, plans, args.time_limit)
        memory = worker_memory(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    concurrent = summarise(loaded, loaded_wall)
    concurrent["clients"] = args.clients
    if "similar" in concurrent:
        concurrent["p99_over_p50"] = round(concurrent["similar"]["p99_ms"] / concurrent["similar"]["p50_ms"], 2)
    return {"workers": workers, "single_client": summarise(baseline, baseline_wall), "concurrent": concurrent,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()], "worker_memory": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="an ARCHIVE_DATA_DIR holding a demo archive (built there if empty)")
    parser.add_argument("--exposures", type=int, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--baseline-requests", type=int, default=40)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="each worker count is measured this many times, "
                                                                "alternating, so a change in background load hits both")
    parser.add_argument("--mix", choices=["similar", "mixed"], default="similar",
                        help="only find-similar (default), or find-similar and prototype search alternating")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds for the concurrent phase")
    args = parser.parse_args()

    temporary = None
    if args.data_dir:
        data_dir = Path(args.data_dir).resolve()
    else:
        temporary = tempfile.TemporaryDirectory(prefix="desom-load-")
        data_dir = Path(temporary.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "LOG_LEVEL": "ERROR"}
    env.pop("DATABASE_URL", None)
    build_s = None
    try:
        if not (data_dir / "archive.sqlite3").exists():
            build_s = build_demo(data_dir, {**env, "DEBUG": "1"}, args.exposures)
        prod = {**env, **PRODUCTION}
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=prod, check=True)
        subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=prod, check=True)
        subprocess.run([PYTHON, "manage.py", "build_index", "--if-model", "-v0"], cwd=ROOT, env=prod, check=True)

        port, server = start_server(env, 1)
        try:
            status, body = get(port, "/api/exposures/?is_science=true&page_size=500")
            ids = [row["id"] for row in json.loads(body)["results"]]
            status, body = get(port, "/api/models/?kind=desom1&is_active=true")
            model = json.loads(body)["results"][0]
            n_nodes = int(model["config"]["map_rows"]) * int(model["config"]["map_cols"])
        finally:
            server.terminate()
            server.wait(timeout=60)

        counts = [int(w) for w in args.workers.split(",")]
        runs = []
        for round_number in range(args.rounds):
            for workers in counts:
                run = measure(env, workers, ids, n_nodes, args, seed_offset=1000 * round_number)
                run["round"] = round_number + 1
                runs.append(run)
                print(json.dumps({k: run[k] for k in ("round", "workers", "concurrent", "load_average_after")}),
                      flush=True)
    finally:
        if temporary is not None:
            temporary.cleanup()

    def throughput(workers):
        values = [r["concurrent"]["throughput_rps"] for r in runs if r["workers"] == workers]
        return sorted(values)[len(values) // 2] if values else None

    ratios = {}
    if len(counts) > 1:
        base = counts[0]
        for workers in counts[1:]:
            ratios[f"{workers}_over_{base}"] = {
                "median_throughput": round(throughput(workers) / throughput(base), 2),
                "per_round": [round(b["concurrent"]["throughput_rps"] / a["concurrent"]["throughput_rps"], 2)
                              for a, b in zip([r for r in runs if r["workers"] == base],
                                              [r for r in runs if r["workers"] == workers])]}
    result = {
        "benchmark": "load: find-similar over HTTP on loopback, production server (gunicorn), 1 vs 2 workers",
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "server": "gunicorn (config/gunicorn.conf.py: gthread, 2 threads a worker, preload, mmap indexes), "
                  "DEBUG=0, SQLite, 127.0.0.1; the load generator runs on the same machine",
        "archive": {"science_exposures": len(ids), "desom1_nodes": n_nodes,
                    "demo_build_s": build_s and round(build_s, 1)},
        "runs": runs,
        "throughput_ratio": ratios,
        "errors": sum(r["concurrent"]["errors"] + r["single_client"]["errors"] for r in runs),
        "note": "latency per request including connection setup. The machine's load average is recorded "
                "before and after each concurrent phase: with other jobs running, the workers share the "
                "cores with them and the ratio between worker counts is depressed",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("throughput_ratio", "errors")}, indent=2))
    if result["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
