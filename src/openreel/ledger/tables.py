"""ORM tables. The wire shapes live in ``openreel.protocols.apiframe.schemas``; these may change without
moving them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from openreel.domain.limits import MAX_IDEMPOTENCY_KEY


def utcnow() -> datetime:
    return datetime.now(UTC)


def database_now(session: Session) -> datetime:
    """Now by the database's clock where servers share it (PostgreSQL): a lease one server sets and
    another judges is read on one clock, whatever theirs say. SQLite has one server: its clock."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(select(func.now()))
        assert now is not None
        return now
    return utcnow()


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    plan: Mapped[str] = mapped_column(String(50), default="self-hosted")
    # The sum of the account's credit entries, written with each of them (ledger/credits.py).
    balance: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Its queued and running jobs, counted with the same statements: a charge admits a job, its
    # settlement ends it (ledger/credits.py). The cap on them then costs a submission no count.
    active_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CreditEntry(Base):
    """Append-only. One charge and at most one refund per job, enforced by the unique constraint."""

    __tablename__ = "credit_entries"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_credit_entries_job_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key", name="uq_jobs_account_idempotency"),
        Index("ix_jobs_account_created", "account_id", "created_at", "id"),
        Index("ix_jobs_account_status", "account_id", "status"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="QUEUED")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    credit_cost: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(MAX_IDEMPOTENCY_KEY), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The submitting request's base URL: links in webhook payloads use it unless a public URL is set.
    base_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A PROCESSING job is leased to one dispatcher, which renews the lease while its worker answers;
    # an expired lease means that dispatcher or worker is gone, and the reaper takes the job back.
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)


class JobRecord(Protocol):
    """A job as its readers see it: the ORM ``Job``, or a row of its table read without the ORM
    (``jobs.read_for_account``, ``jobs.list_jobs``): building the ORM instance took over a quarter of a
    polled read's time (BENCHMARKS.md)."""

    @property
    def id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def progress(self) -> int: ...
    @property
    def input(self) -> dict[str, Any]: ...
    @property
    def spec(self) -> dict[str, Any]: ...
    @property
    def credit_cost(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def result(self) -> dict[str, Any] | None: ...
    @property
    def webhook_status(self) -> str | None: ...
    @property
    def webhook_error(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def deleted_at(self) -> datetime | None: ...


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_account_expires", "account_id", "expires_at", "byte_size"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    content_type: Mapped[str] = mapped_column(String(64))
    byte_size: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """The webhook outbox: written in the transaction that changes the job, sent (and retried) later."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    event: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # No default: set by the database's clock where servers share it (``database_now``), as it is judged.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Server(Base):
    """Each API server on this database, as its lease keeper last reported it: a server whose engine
    failed leaves the queue to those whose engines render, rather than failing their jobs."""

    __tablename__ = "servers"

    owner: Mapped[str] = mapped_column(String(160), primary_key=True)
    engine_failed: Mapped[bool] = mapped_column(Boolean)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PendingDeletion(Base):
    """A stored object no job names any more that the store has not removed yet: written in the
    transaction that stops naming it (or when the store refused), deleted once the store has removed it."""

    __tablename__ = "pending_deletions"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Set by the database's clock where servers share it (``database_now``), as it is judged.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
