"""bench/api_load.py: reading wrk's report (the load itself needs wrk and two cores)."""

from __future__ import annotations

import pytest
from api_load import parse

REPORT = """Running 8s test @ http://127.0.0.1:40000/v2/jobs
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    85.12ms   23.99ms   1.02s    83.41%
  Latency Distribution
     50%  750.00us
     75%   90.10ms
     90%  110.43ms
     99%    1.02s
  3016 requests in 8.00s, 5.11MB read
  Socket errors: connect 0, read 0, write 0, timeout 7
  Non-2xx or 3xx responses: 12
Requests/sec:    376.52
Transfer/sec:    653.10KB
""".replace("1.02s\n", "1.02s \n")  # wrk ends some lines with a space


def test_rate_percentiles_and_errors_are_read_in_their_units() -> None:
    result = parse("job list", REPORT)
    assert (result.rps, result.p50_ms, result.p99_ms, result.errors) == (376.52, 0.75, 1020.0, 19)


def test_a_report_without_figures_stops_the_run() -> None:
    with pytest.raises(SystemExit, match="job list: wrk printed no figures"):
        parse("job list", "unable to connect to 127.0.0.1:40000 Connection refused\n")
