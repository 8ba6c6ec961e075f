"""Running the whole service inside the current process, for ``openreel generate`` without a server.

The app runs under uvicorn in a background thread on a free loopback port; the CLI then talks to it
over HTTP exactly as it would to a remote server, so both paths share every line of client code.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from openreel.app import create_app
from openreel.executors.base import Executor
from openreel.ledger import accounts, credits
from openreel.ledger.db import Database, migrate
from openreel.settings import Settings, write_private

KEY_FILE = "cli.key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def embedded_server(
    settings: Settings, timeout: float = 300.0, executor: Executor | None = None, *, shared: bool = False
) -> Iterator[str]:
    """Yield the base URL of an in-process server whose engine has loaded; ``shared``: see ``create_app``
    (what ``openreel serve`` is, where a test stands one in for it)."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": _free_port()})
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, executor, shared=shared),
            host=settings.host,
            port=settings.port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="openreel-embedded", daemon=True)
    thread.start()
    url = f"http://{settings.host}:{settings.port}"
    try:
        deadline = time.monotonic() + timeout
        # One client for every poll: a new one builds an SSL context each time (17 ms of CPU).
        with httpx.Client(timeout=2) as client:
            _until_ready(client, url, deadline, thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


class StartFailed(RuntimeError):
    """The embedded server did not come up; the message says why."""


def _until_ready(client: httpx.Client, url: str, deadline: float, thread: threading.Thread) -> None:
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise StartFailed("the embedded server stopped during start-up")
        try:
            health = client.get(url + "/healthz").json()
            if health["engineError"]:
                raise StartFailed(f"the {health['engine']} engine could not load: {health['engineError']}")
            if health["engineReady"]:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StartFailed("the embedded server did not become ready")


def local_key(settings: Settings, needed_credits: int) -> str:
    """The data directory's own CLI key, topped up so the local run can pay for itself."""
    settings.made_data_dir()
    url = settings.resolved_database_url()
    migrate(url)
    db = Database(url)
    path = settings.data_dir / KEY_FILE
    try:
        with db.session() as session:
            key = accounts.find_key(session, path.read_text().strip()) if path.exists() else None
            if key is None:
                made = accounts.create_key(session, name="openreel generate")
                write_private(path, made.raw)
                account_id = made.account_id
            else:
                account_id = key.account_id
            shortfall = needed_credits - credits.balance(session, account_id)
            if shortfall > 0:
                credits.grant(session, account_id, shortfall, note="local run of openreel generate")
        return path.read_text().strip()
    finally:
        db.dispose()
