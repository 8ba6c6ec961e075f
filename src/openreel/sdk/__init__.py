"""The Python SDK: typed clients for the v2 API, and webhook signature checks."""

from openreel.domain.signatures import verify_webhook
from openreel.sdk.client import AsyncClient, Backoff, Client
from openreel.sdk.errors import (
    AuthenticationError,
    ConflictError,
    InsufficientCreditsError,
    JobCancelled,
    JobError,
    JobFailed,
    NetworkError,
    NotFoundError,
    OpenreelError,
    RateLimitError,
    RequestTimedOut,
    ServerError,
    ServerUnreachable,
    UnexpectedResponseError,
    ValidationError,
    WaitTimeout,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Backoff",
    "Client",
    "ConflictError",
    "InsufficientCreditsError",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "NetworkError",
    "NotFoundError",
    "OpenreelError",
    "RateLimitError",
    "RequestTimedOut",
    "ServerError",
    "ServerUnreachable",
    "UnexpectedResponseError",
    "ValidationError",
    "WaitTimeout",
    "verify_webhook",
]
