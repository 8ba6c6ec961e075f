"""``GET /metrics``: Prometheus' text format, for a scraper on this machine unless the operator opens it."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request, Response

from openreel.protocols.apiframe.errors import ApiError
from openreel.protocols.deps import ServicesDep
from openreel.service.metrics import CONTENT_TYPE

router = APIRouter(include_in_schema=False)


PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _direct_loopback(request: Request) -> bool:
    """A client on this machine that no proxy forwarded (a local proxy would make everyone loopback)."""
    if request.client is None or any(h in request.headers for h in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a server bound to ::
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@router.get("/metrics")
def metrics(request: Request, svc: ServicesDep) -> Response:
    if not (svc.settings.metrics_public or _direct_loopback(request)):
        raise ApiError(
            403, "/metrics answers only clients on this machine; set OPENREEL_METRICS_PUBLIC=1 to open it"
        )
    return Response(svc.metrics.exposition(svc.dispatcher.engine), media_type=CONTENT_TYPE)
