"""Job ids as Google and OpenAI carry them (32 hex digits) beside the ledger's dashed UUIDs."""

from __future__ import annotations

import re
import uuid


def parse_job_id(raw: str) -> str | None:
    """A job UUID from its 32-hex form (what Google and OpenAI ids carry) or its dashed form."""
    if not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F-]{36}", raw):
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def hex_id(job_id: str) -> str:
    return uuid.UUID(job_id).hex
