"""Hostile uploads against the production server on loopback: how fast each is refused and
what it costs the worker's memory.

Starts the server as `make serve` does (gunicorn, DEBUG off, one worker) over a demo archive
(--data-dir, built by bench_load.py's demo if empty), then posts to /api/search/exposure/: a
gzip bomb (under 1 MB of .fits.gz declaring a 40 000 x 40 000 image and holding 800 MB of
zeros), an exposure of 200 extensions, a plain header declaring 10^12 float64 pixels, and,
for comparison, an honest small exposure that is searched. For each: the HTTP status, the time
to the answer seen by the client, and the worker's peak resident memory (VmHWM) before and
after. Writes benchmarks/results/uploads.json.

    .venv/bin/python -m benchmarks.bench_uploads --data-dir var/load-demo
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path

from benchmarks import bench_load

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

RESULTS = HERE / "results" / "uploads.json"


def post_file(port: int, name: str, data: bytes, timeout: float = 300.0):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request("POST", "/api/search/exposure/?k=5", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        payload = response.read()
        return response.status, time.perf_counter() - started, payload
    finally:
        connection.close()


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from tests.desom.fitsfactory import absurd_header, gzip_bomb, many_extensions

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "load-demo"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "LOG_LEVEL": "ERROR",
           # uploads are throttled per client: the benchmark is one client making a handful
           "UPLOAD_THROTTLE_RATE": "1000/min"}
    env.pop("DATABASE_URL", None)
    if not (data_dir / "archive.sqlite3").exists():
        bench_load.build_demo(data_dir, {**env, "DEBUG": "1"}, 60)
    honest = sorted(data_dir.glob("demo-survey-*/*.fits*"))[0].read_bytes()
    cases = [("bomb.fits.gz", gzip_bomb()), ("many.fits", many_extensions()), ("absurd.fits", absurd_header()),
             ("honest.fits", honest)]
    port, server = bench_load.start_server(env, 1)
    rows = []
    try:
        worker = int(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0])
        post_file(port, "warm.fits", honest)         # first search maps the indexes, loads the model
        for name, data in cases:
            before = peak_rss_mib(worker)
            status, seconds, payload = post_file(port, name, data)
            rows.append({"file": name, "bytes": len(data), "status": status, "seconds": round(seconds, 3),
                         "worker_peak_rss_mib_before": before, "worker_peak_rss_mib_after": peak_rss_mib(worker),
                         "answer": json.loads(payload).get("detail", "")[:160] if status != 200 else "searched"})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    document = {"benchmark": "hostile uploads against the production server (one gunicorn worker)",
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                "note": "seconds: client-side time to the answer, the upload's transfer on loopback included",
                "results": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
