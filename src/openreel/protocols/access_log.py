"""The access log without secrets: Google's REST clients may pass the API key in the query (``?key=``),
and uvicorn's access log writes each request's path with its query."""

from __future__ import annotations

import logging
import re

# The parameter as Starlette reads it: its name may be percent-encoded, its value runs to the next one.
QUERY_KEY = re.compile(r"(?<=[?&])((?:k|%6[bB])(?:e|%65)(?:y|%79)=)[^&\s]*")
ACCESS_LOGGER = "uvicorn.access"


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                QUERY_KEY.sub(r"\1REDACTED", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def redact_access_log() -> None:
    """Once per process, however many servers it starts."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, RedactKeys) for existing in logger.filters):
        logger.addFilter(RedactKeys())
