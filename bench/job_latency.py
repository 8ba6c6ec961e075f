"""Submit-to-COMPLETED latency of video jobs as a client sees it, and where the time beyond the render goes.

Without --server it starts its own server (tiny engine unless --engine says otherwise) in a temporary
directory, waits until the engine is loaded, and times jobs one after another, polling every 10 ms. For
each job it reads the server's /metrics before and after: the engine's render and encode seconds, and
the phases around them (openreel_job_phase_seconds: submit to claim, claim to hand-off, the worker's
time beyond render and encode, file commit, status write). The overhead is the client's total less
render and encode; what no phase accounts for is HTTP, the polling interval and the progress writes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from openreel.scheduler.dispatcher import PHASES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import LiveServer, free_port

POLL_S = 0.01
STAGES = ("render", "encode")


def sums(client: httpx.Client) -> dict[str, float]:
    """Seconds summed so far per render stage and per phase, and how many status writes were timed."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").raise_for_status().text):
        for sample in family.samples:
            if sample.name == "openreel_render_seconds_sum":
                found[sample.labels["stage"]] = found.get(sample.labels["stage"], 0.0) + sample.value
            elif sample.name == "openreel_job_phase_seconds_sum":
                found[sample.labels["phase"]] = sample.value
            elif sample.name == "openreel_job_phase_seconds_count" and sample.labels["phase"] == "status":
                found["timed"] = sample.value
    return found


def run(base_url: str, key: str, args: argparse.Namespace) -> list[dict[str, float]]:
    body = {
        "prompt": "a cat sitting on a windowsill watching rain fall outside",
        "model": args.model,
        "veoParams": {"duration": args.duration, "resolution": args.resolution, "seed": 1},
    }
    rows = []
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        for i in range(args.jobs):
            before = sums(client)
            started = time.perf_counter()
            job_id = client.post("/v2/videos/generate", json=body).raise_for_status().json()["jobId"]
            while (job := client.get(f"/v2/jobs/{job_id}").json())["status"] in ("QUEUED", "PROCESSING"):
                time.sleep(POLL_S)
            total = time.perf_counter() - started
            if job["status"] != "COMPLETED":
                raise SystemExit(f"job {job_id} ended {job['status']}: {job['error']}")
            deadline = time.monotonic() + 10
            while (after := sums(client)).get("timed") == before.get("timed"):
                if time.monotonic() > deadline:
                    raise SystemExit("the server times no job phases (openreel_job_phase_seconds)")
                time.sleep(POLL_S)
            row = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in (*STAGES, *PHASES)}
            row["total"] = total
            row["overhead"] = total - row["render"] - row["encode"]
            row["unaccounted"] = row["overhead"] - sum(row[p] for p in PHASES)
            rows.append(row)
            print(
                f"job {i + 1}: {total:6.2f} s, render {row['render']:.2f} s, encode {row['encode']:.2f} s, "
                f"overhead {1000 * row['overhead']:.0f} ms",
                flush=True,
            )
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", help="base URL of a running server (needs --key; /metrics from here)")
    parser.add_argument("--key")
    parser.add_argument("--engine", default="tiny")
    parser.add_argument("--model", default="veo-3.1-fast")
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--resolution", default="720p")
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()

    if args.server:
        rows = run(args.server, args.key, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = LiveServer(
                data_dir=Path(tmp) / "data",
                port=free_port(),
                engine=args.engine,
                env={"OPENREEL_RATE_LIMIT_PER_MINUTE": "0"},  # polls every 10 ms
            )
            server.start()
            try:
                rows = run(server.url, server.new_key(credits=10**6), args)
            finally:
                server.stop()
    print(
        f"{args.model} {args.duration} s {args.resolution}, {len(rows)} jobs one after another, engine "
        f"{args.engine}; {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("| part | p50 ms | p99 ms |\n|---|---|---|")
    for name in ("total", *STAGES, "overhead", *PHASES, "unaccounted"):
        values = [row[name] for row in rows]
        print(f"| {name} | {1000 * statistics.median(values):.1f} | {1000 * percentile(values, 0.99):.1f} |")


if __name__ == "__main__":
    main()
