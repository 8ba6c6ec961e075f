"""FastAPI dependencies every protocol shares: the application services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from openreel.service.services import Services


def services_of(request: Request) -> Services:
    """For the API-key dependencies, which every request solves: a dependency of their own would cost
    each request another step of FastAPI's solving."""
    services: Services = request.app.state.services
    return services


async def services(request: Request) -> Services:
    """Async, so FastAPI calls it on the event loop: a plain function would cost every request a hop
    to its thread pool and back."""
    return services_of(request)


ServicesDep = Annotated[Services, Depends(services)]
