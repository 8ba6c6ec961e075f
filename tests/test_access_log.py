"""The access log leaves out the secrets a request's query may carry, however its names are encoded."""

from __future__ import annotations

import logging

import pytest

from openreel.protocols.access_log import RedactSecrets


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        (
            "/v1beta/models/m:predictLongRunning?alt=json&key=afk_1",
            "/v1beta/models/m:predictLongRunning?alt=json&key=REDACTED",
        ),
        ("/v2/files/results/j/1.mp4?exp=17&sig=0a1b", "/v2/files/results/j/1.mp4?exp=17&sig=REDACTED"),
        ("/x?%6Bey=afk_1&%73%69%67=0a1b&keys=kept", "/x?%6Bey=REDACTED&%73%69%67=REDACTED&keys=kept"),
        ("/x?monkey=kept&design=kept", "/x?monkey=kept&design=kept"),
    ],
)
def test_keys_and_signatures_in_the_query_are_redacted(path: str, logged: str) -> None:
    # uvicorn's access record: client, method, path with its query, HTTP version, status.
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', None, None)
    record.args = ("127.0.0.1:5000", "GET", path, "1.1", 200)
    assert RedactSecrets().filter(record)
    assert record.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 200'
