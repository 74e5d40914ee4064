"""Load test on loopback: find-similar and prototype search with 50 concurrent clients.

Builds a small demo archive in a temporary ARCHIVE_DATA_DIR (or reuses --data-dir), starts a
real threaded WSGI server on 127.0.0.1 in a subprocess, and drives it with Python threads using
http.client. First one client alone (the baseline), then --clients at once; every request is
checked (HTTP 200, JSON with results). Bounded in count (--requests per client) and in time
(--time-limit). Writes p50/p99 latencies, throughput and errors to
benchmarks/results/load.json.

    .venv/bin/python benchmarks/bench_load.py                # builds the demo archive first
    .venv/bin/python benchmarks/bench_load.py --data-dir var/load-demo --clients 50
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

# A threaded WSGI server with a listen backlog large enough for every client at once (Django's
# runserver keeps 10, which would measure SYN retries rather than the application).
SERVER = """
import os, sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
sys.path.insert(0, os.getcwd())
from config.wsgi import application

class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

make_server("127.0.0.1", int(sys.argv[1]), application, server_class=Server, handler_class=Quiet).serve_forever()
"""


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


def request_plan(ids, n_nodes, count, seed):
    rng = random.Random(seed)
    plan = []
    for i in range(count):
        if i % 2 == 0:
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="an ARCHIVE_DATA_DIR holding a demo archive (built there if empty)")
    parser.add_argument("--exposures", type=int, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--baseline-requests", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds for the concurrent phase")
    args = parser.parse_args()

    temporary = None
    if args.data_dir:
        data_dir = Path(args.data_dir).resolve()
    else:
        temporary = tempfile.TemporaryDirectory(prefix="desom-load-")
        data_dir = Path(temporary.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir), "DEBUG": "1", "OMP_NUM_THREADS": "1",
           "LOG_LEVEL": "ERROR"}
    env.pop("DATABASE_URL", None)
    build_s = None
    if not (data_dir / "archive.sqlite3").exists():
        build_s = build_demo(data_dir, env, args.exposures)

    port = free_port()
    server = subprocess.Popen([PYTHON, "-c", SERVER, str(port)], cwd=ROOT, env=env)
    try:
        wait_ready(port, server)
        status, body = get(port, "/api/exposures/?is_science=true&page_size=500")
        ids = [row["id"] for row in json.loads(body)["results"]]
        status, body = get(port, "/api/models/?kind=desom1&is_active=true")
        model = json.loads(body)["results"][0]
        n_nodes = int(model["config"]["map_rows"]) * int(model["config"]["map_cols"])
        # Warm the indexes (first search loads them from disk) before timing anything.
        for kind, path in request_plan(ids, n_nodes, 4, seed=99):
            assert get(port, path)[0] == 200, path

        baseline, baseline_wall = run_clients(port, [request_plan(ids, n_nodes, args.baseline_requests, 0)],
                                              args.time_limit)
        plans = [request_plan(ids, n_nodes, args.requests, seed) for seed in range(1, args.clients + 1)]
        loaded, loaded_wall = run_clients(port, plans, args.time_limit)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if temporary is not None:
            temporary.cleanup()

    single, concurrent = summarise(baseline, baseline_wall), summarise(loaded, loaded_wall)
    ratios = {}
    for kind in ("similar", "search", "all"):
        if kind in single and kind in concurrent:
            ratios[kind] = {"p50_ratio": round(concurrent[kind]["p50_ms"] / single[kind]["p50_ms"], 2),
                            "p99_ratio": round(concurrent[kind]["p99_ms"] / single[kind]["p99_ms"], 2)}
    result = {
        "benchmark": "load: find-similar and prototype search over HTTP on loopback",
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "server": "threaded wsgiref (config.wsgi), SQLite, 127.0.0.1",
        "archive": {"science_exposures": len(ids), "desom1_nodes": n_nodes, "demo_build_s": build_s and round(build_s, 1)},
        "single_client": single,
        "concurrent": {"clients": args.clients, "requests_per_client": args.requests, **concurrent},
        "concurrent_over_single": ratios,
        "note": "latency per request including connection setup; ratios compare the concurrent phase "
                "with one client alone in the same run",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if concurrent["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
