"""The FastAPI application, where every protocol and the Studio meet: services are built at start-up and
torn down at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from openreel import __version__
from openreel.domain.catalog import load_catalog
from openreel.executors.base import Executor
from openreel.ledger.db import DATABASE_ERRORS, Database, migrate
from openreel.protocols import metrics_route
from openreel.protocols.apiframe import account, errors, files, jobs, models, uploads, videos
from openreel.protocols.google import routes as google
from openreel.protocols.guards import BodyGuard, NoSniff, database_down, store_down
from openreel.protocols.openai import routes as openai_videos
from openreel.scheduler.dispatcher import Dispatcher
from openreel.scheduler.housekeeping import Housekeeper
from openreel.service.job_service import admissions
from openreel.service.key_cache import KeyCache
from openreel.service.metrics import Metrics
from openreel.service.polls import polls
from openreel.service.queue_order import QueueOrder
from openreel.service.ratelimit import RateLimiter
from openreel.service.services import Services
from openreel.service.views import RANDOM_WEIGHTS_NOTICE, Presenter
from openreel.service.webhooks import WebhookSender
from openreel.settings import Settings
from openreel.storage import make_storage
from openreel.storage.base import StorageUnavailable
from openreel.storage.owner import Ownership
from openreel.storage.signing import Signer
from openreel.studio import routes as studio

log = logging.getLogger("openreel")


def build_services(settings: Settings, executor: Executor | None = None) -> Services:
    settings.made_data_dir()
    url = settings.resolved_database_url()
    migrate(url)
    db = Database(url)
    storage = make_storage(settings)
    signer = Signer(settings.resolved_secret())
    catalog = load_catalog(settings.prices_file)
    presenter = Presenter(signer, storage, settings.result_url_ttl_s)
    webhooks = WebhookSender(settings, db, presenter)
    metrics = Metrics(db)
    dispatcher = Dispatcher(
        settings,
        db,
        storage,
        signer,
        catalog,
        on_job_event=webhooks.enqueue,
        on_rendered=metrics.rendered,
        on_phase=metrics.phase,
        executor=executor,
    )
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    keys = KeyCache(db, settings.key_cache_s)
    queue = QueueOrder(dispatcher.queue)
    return Services(
        settings,
        db,
        storage,
        signer,
        catalog,
        dispatcher,
        presenter,
        webhooks,
        keys,
        limiter,
        metrics,
        admissions(db, settings.max_concurrent_jobs),
        polls(db, queue, dispatcher),
        queue,
        Housekeeper(db, storage),
    )


def create_app(
    settings: Settings | None = None, executor: Executor | None = None, *, shared: bool = True
) -> FastAPI:
    """``executor``: what renders the jobs, when not the one the settings name (tests bring their own).
    ``shared`` False: a server for one process's own jobs (``embedded``), which owns its data directory
    as any server does but is not named to others as one to send their jobs to."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = build_services(settings, executor)
        # Whatever started is stopped, also when a later part fails to start; in reverse order.
        with ExitStack() as running:
            running.callback(svc.db.dispose)
            ownership = Ownership(settings.data_dir)
            owner = ownership.take(settings.local_url if shared else None)
            running.callback(ownership.release)
            if not ownership.arrive(svc.housekeeper.remove_partials if owner else None):
                log.warning(
                    "other servers run on %s: its half-written files are left to them", settings.data_dir
                )
            svc.housekeeper.start()
            running.callback(svc.housekeeper.stop)
            svc.webhooks.start()
            running.callback(svc.webhooks.close)
            svc.dispatcher.start()
            running.callback(svc.dispatcher.stop)
            app.state.services = svc
            data = settings.data_dir.resolve()
            log.info("openreel %s: engine=%s, data in %s", __version__, settings.engine, data)
            if settings.engine == "tiny":
                log.warning(RANDOM_WEIGHTS_NOTICE)
            yield

    app = FastAPIOffline(
        title="openreel",
        version=__version__,
        description="Self-hosted video generation speaking the Apiframe v2 (Veo) wire protocol.",
        lifespan=lifespan,
    )
    errors.install(app)
    for error_class in DATABASE_ERRORS:
        app.add_exception_handler(error_class, database_down)
    app.add_exception_handler(StorageUnavailable, store_down)
    # The last added runs first: nosniff also reaches the guard's own 413s.
    app.add_middleware(BodyGuard)
    app.add_middleware(NoSniff)
    for router in (
        videos.router,
        jobs.router,
        account.router,
        models.router,
        uploads.router,
        files.router,
        metrics_route.router,
        google.router,
        openai_videos.router,
        studio.router,
    ):
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        engine = app.state.services.dispatcher.engine
        return {
            "status": "ok",
            "engine": engine.name,
            "engineReady": engine.ready,
            "engineError": engine.error,
            "workers": {"slots": engine.slots, "busy": engine.busy},
        }

    return app
