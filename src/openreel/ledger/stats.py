"""Totals over the whole ledger for an operator's metrics. Job and credit rows are never removed (a deleted
job is only hidden), so those totals only grow and can be exported as counters."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openreel.ledger.tables import CreditEntry, Job, PendingDeletion, WebhookDelivery


@dataclass(frozen=True)
class Totals:
    jobs: dict[tuple[str, str], int]  # (model, status) -> jobs
    credits: dict[str, int]  # credit entry kind (grant, charge, refund) -> credits, as positive numbers
    webhooks: dict[str, int]  # delivery status -> outbox rows
    pending_deletions: int  # stored objects the store refused to delete, to be asked again


def totals(session: Session) -> Totals:
    jobs = session.execute(select(Job.model, Job.status, func.count()).group_by(Job.model, Job.status))
    credits = session.execute(
        select(CreditEntry.kind, func.sum(func.abs(CreditEntry.amount))).group_by(CreditEntry.kind)
    )
    webhooks = session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status))
    return Totals(
        jobs={(model, status): int(n) for model, status, n in jobs},
        credits={kind: int(n or 0) for kind, n in credits},
        webhooks={status: int(n) for status, n in webhooks},
        pending_deletions=session.scalar(select(func.count()).select_from(PendingDeletion)) or 0,
    )
