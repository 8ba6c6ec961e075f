"""The operator's commands on this machine's database: keys, accounts and credits, by id or by key."""

from __future__ import annotations

from typing import Annotated

import typer

from openreel.cli.local import DataDir, account_of, database, settings_of
from openreel.cli.terminal import Typer, columns, fail, say, sentence, when

keys_app = Typer(help="API keys.")
accounts_app = Typer(help="Accounts: balances, keys and jobs.")
credits_app = Typer(help="Credit balances and the ledger.")

Account = Annotated[str, typer.Argument(help="The account: its id, the id of one of its keys, or a key.")]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    credits: Annotated[int, typer.Option(min=0, help="Credits granted to the account now.")] = 0,
    account: Annotated[
        str | None, typer.Option(help="Add the key to this account instead of a new one.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; the key is printed alone on the last line."""
    from openreel.ledger import accounts

    db = database(settings_of(data_dir))
    try:
        with db.session() as session:
            new = accounts.create_key(session, name=name, account_id=account, initial_credits=credits)
    except LookupError as exc:
        fail(sentence(exc))
    say(f"account {new.account_id}, key id {new.key_id}, {credits} credits granted")
    say("Store this key now; only its hash is kept:", style="yellow")
    print(new.raw)


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option(help="Only this account's keys (id, key id or key).")] = None,
    data_dir: DataDir = None,
) -> None:
    """List API keys: id, account, name, first characters, status."""
    from openreel.ledger import accounts

    db = database(settings_of(data_dir))
    account_id = account_of(db, account) if account else None
    with db.session() as session:
        rows = [
            (k.id, k.account_id, k.name, k.prefix, "active" if k.active else "revoked", when(k.created_at))
            for k in accounts.keys(session, account_id)
        ]
    columns(("key id", "account", "name", "starts with", "status", "created"), rows)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see keys list).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key for good.

    It gets 403 from now on (a running server may accept it for OPENREEL_KEY_CACHE_S more seconds);
    its account, credits and jobs stay."""
    from openreel.ledger import accounts

    db = database(settings_of(data_dir))
    try:
        with db.session() as session:
            key = accounts.revoke(session, key_id)
            account_id = key.account_id
    except LookupError as exc:
        fail(sentence(exc))
    say(f"revoked key {key_id} of account {account_id}")


@accounts_app.command("list")
def accounts_list(data_dir: DataDir = None) -> None:
    """List accounts with their balance and number of active keys."""
    from openreel.ledger import accounts

    db = database(settings_of(data_dir))
    with db.session() as session:
        rows = [
            (account.id, account.name, str(balance), str(active), when(account.created_at))
            for account, balance, active in accounts.listing(session)
        ]
    columns(("account", "name", "balance", "active keys", "created"), rows)


@accounts_app.command("show")
def accounts_show(account: Account, data_dir: DataDir = None) -> None:
    """Show an account: its balance, its keys and its jobs by status."""
    from openreel.ledger import accounts, credits, jobs
    from openreel.ledger.tables import Account as AccountRow

    db = database(settings_of(data_dir))
    account_id = account_of(db, account)
    with db.session() as session:
        row = session.get(AccountRow, account_id)
        assert row is not None
        say(f"account {row.id} ({row.name}), created {when(row.created_at)}")
        say(f"balance: {credits.balance(session, account_id)}")
        counts = jobs.status_counts(session, account_id)
        say("jobs: " + (", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())) or "none"))
        columns(
            ("key id", "name", "starts with", "status", "created"),
            [
                (k.id, k.name, k.prefix, "active" if k.active else "revoked", when(k.created_at))
                for k in accounts.keys(session, account_id)
            ],
        )


@credits_app.command("grant")
def credits_grant(
    account: Account,
    amount: Annotated[int, typer.Argument(min=1, help="Credits to add.")],
    data_dir: DataDir = None,
) -> None:
    """Add credits to an account."""
    from openreel.ledger import credits

    db = database(settings_of(data_dir))
    account_id = account_of(db, account)
    with db.session() as session:
        credits.grant(session, account_id, amount, note="granted with the CLI")
        total = credits.balance(session, account_id)
    say(f"granted {amount}; balance {total}")


@credits_app.command("show")
def credits_show(account: Account, data_dir: DataDir = None) -> None:
    """List the ledger of an account, and its balance."""
    from openreel.ledger import credits

    db = database(settings_of(data_dir))
    account_id = account_of(db, account)
    with db.session() as session:
        rows = credits.entries(session, account_id)
        total = credits.balance(session, account_id)
    say(f"account {account_id}")
    columns(
        ("when", "kind", "amount", "job", "note"),
        [
            (
                e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.kind,
                f"{e.amount:+d}",
                e.job_id or "",
                e.note or "",
            )
            for e in rows
        ],
    )
    say(f"balance: {total}")
