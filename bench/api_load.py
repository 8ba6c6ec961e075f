"""Requests per second and latency of the API, beside a bare FastAPI endpoint measured in the same run.

The API server (every thread of it) is pinned to one core; wrk and the server's render worker to another,
the worker at idle priority, so the figures are the API's own. Each route is loaded for ``--seconds``
with ``--connections`` open connections: submit (POST /v2/videos/generate, every request a new job),
job read (GET /v2/jobs/{id}), the same job read as a google-genai client polls it
(GET /v1beta/.../operations/{id}) and job list (GET /v2/jobs), on SQLite and on PostgreSQL; then
``--clients`` clients (1,000) each poll a job every ``--poll-interval`` seconds (1), the load a hosted
API's users make. The bare endpoint is a FastAPI route that returns a small JSON object, served by
uvicorn the same way (its access log on, as the server's is).

Needs wrk (Debian: ``apt-get install wrk``) and two cores. ``--markdown`` prints the table for
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from databases import throwaway_database
from support import LiveServer, free_port

API_CORE, LOAD_CORE = 0, 1
SERVER_ENV = {
    "OPENREEL_RATE_LIMIT_PER_MINUTE": "0",
    "OPENREEL_MAX_CONCURRENT_JOBS": "1000000",
    "OPENREEL_X264_PRESET": "ultrafast",
}
SUBMIT = {"prompt": "a cat on a windowsill", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}

bare = FastAPI()


@bare.get("/bare")
def bare_route() -> dict[str, str]:
    return {"status": "ok"}


@dataclass
class Result:
    route: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    saturating: bool = True  # the load asks for all the server can answer: its rate compares with bare's


def pin(pid: int, core: int, *, idle: bool = False) -> None:
    """Every thread of the process: threads started later inherit the affinity (and the scheduling
    policy) of their creator. ``idle``: below every other process on the core. The render worker shares
    wrk's core so: wrk, waiting behind a busy worker for its share of the core, would time the responses
    late (with a CPU-bound loop beside it, wrk measured the 1,000 polling clients at p50 37 ms and p99
    252 ms against 6 and 55 alone). The worker still renders in what wrk leaves, so the API still sees
    its claims and results."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {core})
        if idle:
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    route: str,
    url: str,
    args: argparse.Namespace,
    headers: dict[str, str],
    body: str | None = None,
    lua: str = "",
    connections: int | None = None,
) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"wrk.method = {json.dumps('POST' if body else 'GET')}\n")
        if body is not None:
            script.write(f"wrk.body = {json.dumps(body)}\n")
        for name, value in headers.items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
        script.write(lua)
    connections = connections or args.connections
    command = ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{args.seconds}s"]
    out = subprocess.run(
        [*command, "--latency", "--timeout", "5s", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    return parse(route, out)


def parse(route: str, out: str) -> Result:
    """What wrk --latency printed: requests/s, the 50th and 99th percentiles, non-2xx answers and timeouts."""
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None or len(latency) != 2:
        raise SystemExit(f"{route}: wrk printed no figures:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|timeout):?\s+(\d+)", out))
    return Result(route, float(rate.group(1)), _ms(latency["50"]), _ms(latency["99"]), errors)


def bare_endpoint(args: argparse.Namespace) -> Result:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api_load:bare", "--port", str(port), "--log-level", "info"],
        cwd=Path(__file__).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/bare"
        for _ in range(100):
            try:
                httpx.get(url)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        pin(process.pid, API_CORE)
        return wrk("bare FastAPI endpoint", url, args, {})
    finally:
        process.terminate()
        process.wait()


def polling_clients(server: LiveServer, args: argparse.Namespace, dialect: str) -> Result:
    """``--clients`` connections, each polling one job every ``--poll-interval`` seconds (±50 %), over
    20 accounts with 5 jobs each: the latency a client sees under a polling load, not at saturation."""
    reads = []
    for _ in range(20):
        key = server.new_key(credits=10**6)
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
            for _ in range(5):
                job_id = client.post("/v2/videos/generate", json=SUBMIT).json()["jobId"]
                reads.append(f'{{"/v2/jobs/{job_id}", "{key}"}}')
    interval_ms = int(args.poll_interval * 1000)
    lua = f"""
local reads = {{{", ".join(reads)}}}
local n = 0
request = function()
  n = n + 1
  local read = reads[n % #reads + 1]
  return wrk.format("GET", read[1], {{["X-API-Key"] = read[2]}})
end
delay = function() return math.random({interval_ms // 2}, {interval_ms * 3 // 2}) end
"""
    route = f"{args.clients:,} clients polling every {args.poll_interval:g} s ({dialect})"
    polled = wrk(route, server.url, args, {}, lua=lua, connections=args.clients)
    return replace(polled, saturating=False)


def api(dialect: str, args: argparse.Namespace) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp, throwaway_database(dialect, Path(tmp)) as url:
        env = {**SERVER_ENV, "OPENREEL_DATABASE_URL": url}
        server = LiveServer(data_dir=Path(tmp) / "data", port=free_port(), env=env)
        server.start()
        try:
            assert server.process is not None
            pin(server.process.pid, API_CORE)
            for worker in children(server.process.pid):
                pin(worker, LOAD_CORE, idle=True)
            key = server.new_key(credits=10**9)
            headers = {"X-API-Key": key}
            with httpx.Client(base_url=server.url, headers=headers) as client:
                job_id = client.post("/v2/videos/generate", json=SUBMIT).json()["jobId"]
                for _ in range(10):
                    client.post("/v2/videos/generate", json=SUBMIT)
            results = [
                wrk(f"job read ({dialect})", f"{server.url}/v2/jobs/{job_id}", args, headers),
                wrk(
                    f"Google operation read ({dialect})",
                    f"{server.url}/v1beta/models/veo-3.1-fast-generate-preview/operations/"
                    + uuid.UUID(job_id).hex,
                    args,
                    {"x-goog-api-key": key},
                ),
                wrk(f"job list ({dialect})", f"{server.url}/v2/jobs?limit=20", args, headers),
                wrk(
                    f"submit ({dialect})",
                    f"{server.url}/v2/videos/generate",
                    args,
                    {**headers, "Content-Type": "application/json"},
                    json.dumps(SUBMIT),
                ),
            ]
            if args.clients:
                results.append(polling_clients(server, args, dialect))
        finally:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--clients", type=int, default=1000, help="polling clients; 0: no polling run")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between one client's reads")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores: one for the API, one for wrk and the render worker")
    baseline = bare_endpoint(args)
    results = [baseline]
    for dialect in args.dialects.split(","):
        results += api(dialect, args)
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"wrk -c{args.connections} -d{args.seconds}s; "
        f"API on core {API_CORE}, wrk and the render worker on core {LOAD_CORE}"
    )
    rows = [("route", "requests/s", "of bare", "p50 ms", "p99 ms", "errors")]
    for r in results:
        ratio = f"{r.rps / baseline.rps:.2f}" if r.saturating else ""
        rows.append((r.route, f"{r.rps:.0f}", ratio, f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", str(r.errors)))
    if args.markdown:
        print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
        for row in rows[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print(
                "  ".join(
                    cell.rjust(w) if i else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )


if __name__ == "__main__":
    main()
