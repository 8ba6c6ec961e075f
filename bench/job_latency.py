"""Submit-to-COMPLETED latency of video jobs, measured over HTTP like a client sees it.

Without --server it starts its own server (tiny engine unless --engine says otherwise) in a
temporary directory, waits until the engine is loaded, and times jobs one after another.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import LiveServer, free_port


def run(base_url: str, key: str, args: argparse.Namespace) -> list[float]:
    body = {
        "prompt": "a cat sitting on a windowsill watching rain fall outside",
        "model": args.model,
        "veoParams": {"duration": args.duration, "resolution": args.resolution, "seed": 1},
    }
    times = []
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        for i in range(args.jobs):
            started = time.perf_counter()
            job_id = client.post("/v2/videos/generate", json=body).raise_for_status().json()["jobId"]
            while (job := client.get(f"/v2/jobs/{job_id}").json())["status"] in ("QUEUED", "PROCESSING"):
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            if job["status"] != "COMPLETED":
                raise SystemExit(f"job {job_id} ended {job['status']}: {job['error']}")
            times.append(elapsed)
            r = job["result"]
            print(
                f"job {i + 1}: {elapsed:6.2f} s  {r['width']}x{r['height']} {r['durationSeconds']} s "
                f"audio={r['hasAudio']}"
            )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", help="base URL of a running server (needs --key)")
    parser.add_argument("--key")
    parser.add_argument("--engine", default="tiny")
    parser.add_argument("--model", default="veo-3.1-fast")
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--resolution", default="720p")
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()

    if args.server:
        times = run(args.server, args.key, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = LiveServer(data_dir=Path(tmp) / "data", port=free_port(), engine=args.engine)
            server.start()
            try:
                times = run(server.url, server.new_key(credits=10_000), args)
            finally:
                server.stop()
    print(
        f"{args.model} {args.duration} s {args.resolution}, {len(times)} jobs, submit to COMPLETED: "
        f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, max {max(times):.2f} s"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, engine {args.engine}")


if __name__ == "__main__":
    main()
