"""The access log without secrets: Google's REST clients may pass the API key in the query (``?key=``),
the links to results and uploads carry their signature (``?sig=``: whoever reads it may download the
file until it expires), and uvicorn's access log writes each request's path with its query."""

from __future__ import annotations

import logging
import re


def _name(name: str) -> str:
    """The parameter's name as Starlette reads it: each letter may be percent-encoded."""
    return "".join(f"(?:{letter}|%{ord(letter):02x})" for letter in name)


# The value runs to the next parameter.
QUERY_SECRET = re.compile(rf"(?<=[?&])((?:{_name('key')}|{_name('sig')})=)[^&\s]*", re.IGNORECASE)
ACCESS_LOGGER = "uvicorn.access"


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                QUERY_SECRET.sub(r"\1REDACTED", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def redact_access_log() -> None:
    """Once per process, however many servers it starts."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
        logger.addFilter(RedactSecrets())
