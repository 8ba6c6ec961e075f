"""Database engine and sessions: SQLite (WAL) by default, any SQLAlchemy URL at scale.

SQLite write transactions start with ``BEGIN IMMEDIATE`` so that the read-check-write of a credit
charge or a status compare-and-set can never interleave with another writer (pysqlite's deferred
BEGIN would let two transactions read the same balance). PostgreSQL gets the same guarantee from
the ``SELECT ... FOR UPDATE`` on the account row in ``credits.lock_totals``.

A process's SQLite writers also queue on a lock before their BEGIN: SQLite lets one write at a time
anyway, and a writer that finds the database locked sleeps in its busy handler for up to 100 ms a
try, which under load turns a few milliseconds of waiting into seconds.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "openreel_read_only"
BUSY_TIMEOUT_S = 30


class WriteTurnTimeout(TimeoutError):
    """Another write of this process held SQLite's one write turn for longer than its busy timeout."""


# The errors a request may meet from the database: ``unavailable`` tells an outage among them (down,
# locked past its timeout, out of connections) from a query's or a schema's fault.
DATABASE_ERRORS: tuple[type[Exception], ...] = (exc.DBAPIError, exc.TimeoutError, WriteTurnTimeout)
_OUTAGES = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, WriteTurnTimeout)
# SQLite's primary result codes of a database that is busy, locked or out of reach (of its disk): the
# rest of its OperationalErrors (no such table, a syntax error) are faults that a retry would not mend.
_SQLITE_TRANSIENT = frozenset({5, 6, 10, 13, 14})  # BUSY, LOCKED, IOERR, FULL, CANTOPEN


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` is the database's state rather than the request's or the code's fault: not the
    client's to mend, and gone once the database is back (the protocols answer 503)."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True  # a dropped connection the driver names vaguely (psycopg2: "SSL SYSCALL error: EOF")
    if not isinstance(error, _OUTAGES):
        return False
    code = getattr(getattr(error, "orig", None), "sqlite_errorcode", None)
    return code is None or code & 0xFF in _SQLITE_TRANSIENT


# PostgreSQL drivers whose connections show their socket (``fileno()``): their pooled connections are
# checked on it, others by ``pool_pre_ping``.
SOCKET_CHECKED_DRIVERS = ("psycopg", "psycopg2")
# Below the idle timeouts of NAT gateways and load balancers (minutes).
PING_AFTER_IDLE_S = 30.0
CHECKED_IN = "openreel_checked_in"
# Each pool keeps this many connections open, and opens no more: SQLAlchemy's default (5, and 10 more
# opened and closed again for each use while the 5 are busy) made every list request under load pay a
# new connection (PostgreSQL: a backend process started; bench/api_load.py's job list, py-spy).
POOL_SIZE = 15


def make_engine(url: str, *, autocommit: bool = False) -> Engine:
    """SQLite's engine ignores ``autocommit``: its reads are told apart by ``READ_ONLY``. Statements'
    parameters stay out of the errors, which are logged: an API key's hash (its webhooks' signing key),
    prompts, webhook URLs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
            pool_size=POOL_SIZE,
            max_overflow=0,
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            # On the driver's connection: SQLAlchemy's statement machinery cost every poll a tenth of
            # its time here (bench/api_load.py under py-spy), for a statement with no result.
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # Autocommit for a pool that only reads: set once per connection, where switching a connection in and
    # out of it at every checkout cost a PostgreSQL read a fifth of its client CPU (bench/api_load.py).
    options: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": 0, "hide_parameters": True}
    if autocommit:
        options.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    driver = make_url(url).get_dialect().driver
    if driver == "psycopg":
        from openreel.ledger.postgres_cursor import PlainDescriptionCursor

        options["connect_args"] = {"cursor_factory": PlainDescriptionCursor}
    if driver not in SOCKET_CHECKED_DRIVERS:
        return create_engine(url, pool_pre_ping=True, **options)
    engine = create_engine(url, **options)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        """A connection idle for a while is pinged, as ``pool_pre_ping`` pings every one: a network
        device may have dropped it without a word. One in use moments ago is not (the ping's round
        trip cost every request a second one): a server that closed it (a restart,
        ``pg_terminate_backend``, its ``idle_session_timeout``) left its last message waiting on the
        socket, where a live idle connection has nothing (none LISTENs). Either way the pool replaces
        a closed connection with a new one."""
        checked_in = record.info.get(CHECKED_IN)
        try:
            if checked_in is not None and time.monotonic() - checked_in > PING_AFTER_IDLE_S:
                engine.dialect.do_ping(dbapi_connection)
                return
            poller = select.poll()  # not select(): a busy server's descriptors pass its limit of 1024
            poller.register(dbapi_connection.fileno(), select.POLLIN)
            closed = bool(poller.poll(0))
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection lost: {error}") from error
        if closed:
            raise exc.DisconnectionError("the database server closed this pooled connection")

    return engine


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to the newest revision (or to ``revision``); safe to run at every start."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        sqlite = self.engine.dialect.name == "sqlite"
        # PostgreSQL reads in autocommit, on a pool of their own: under READ COMMITTED each statement has
        # its own snapshot anyway, and a read then costs one round trip a statement, without a BEGIN and
        # a ROLLBACK.
        self.read_engine: Engine
        if sqlite:
            self.read_engine = self.engine.execution_options(**{READ_ONLY: True})
        else:
            self.read_engine = make_engine(url, autocommit=True)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._writer = _Writer() if sqlite else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        writer: AbstractContextManager[object] = self._writer or nullcontext()
        with writer, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it takes no write lock, so polling never queues
        behind writers."""
        with self._read_sessions() as session, session.begin():
            yield session

    @cached_property
    def on_this_machine(self) -> bool:
        """Whether the database is a file or a server on this machine (a loopback host or a Unix
        socket): reaching it crosses no network. Without a host in the URL, libpq takes the one of its
        ``host`` parameter, else of ``PGHOST``, else its default socket. Worked out once: every job read
        asks."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            return True
        named = url.query.get("host")
        host = url.host or (named if isinstance(named, str) else None) or os.environ.get("PGHOST", "")
        return host.startswith("/") or host in ("", "localhost", "127.0.0.1", "::1")

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine.pool is not self.engine.pool:  # SQLite's reads share the pool
            self.read_engine.dispose()


class _Writer:
    """This process's turn to write: waits as long as SQLite's busy timeout would, then fails as it would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise WriteTurnTimeout("database is locked: another write has held it for too long")

    def __exit__(self, *_: object) -> None:
        self._lock.release()
