"""``GET /v2/me``: who the key belongs to and the account's balance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from openreel.ledger import credits
from openreel.ledger.tables import Account
from openreel.protocols.apiframe.auth import KeyDep
from openreel.protocols.apiframe.schemas import ErrorBody, Me
from openreel.protocols.deps import ServicesDep

router = APIRouter(tags=["Account"])


@router.get("/v2/me", response_model=Me, responses={401: {"model": ErrorBody}})
def me(svc: ServicesDep, key: KeyDep) -> dict[str, Any]:
    with svc.db.read() as session:
        account = session.get(Account, key.account_id)
        assert account is not None
        balance = credits.balance(session, account.id)
    return {
        "user": {"id": key.id, "email": account.email, "role": "OWNER"},
        "team": {
            "id": account.id,
            "name": account.name,
            "plan": account.plan,
            "credits": balance,
            "customerId": None,
            "maxConcurrentJobs": svc.settings.max_concurrent_jobs,
        },
        "apiKey": {"id": key.id, "name": key.name, "prefix": key.prefix},
    }
