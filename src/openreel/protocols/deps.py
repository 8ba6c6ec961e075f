"""FastAPI dependencies every protocol shares: the application services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from openreel.service.services import Services


async def services(request: Request) -> Services:
    """Async, so FastAPI calls it on the event loop: a plain function would cost every request a hop
    to its thread pool and back."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]
