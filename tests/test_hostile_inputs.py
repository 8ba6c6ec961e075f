"""A hostile corpus against every protocol, in-process, on SQLite and PostgreSQL: each malformed URL,
string, cursor or header is a 400 that names its field, in the protocol's own shape, and charges
nothing; private targets are refused at submit. Never a 5xx."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, select, text, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from openreel import netguard
from openreel.app import create_app
from openreel.domain.rules import MAX_URL_LENGTH
from openreel.ledger import accounts, jobs
from openreel.ledger.db import Database
from openreel.ledger.tables import Account, Job, PendingDeletion, Upload
from openreel.protocols.guards import MAX_JSON_VALUES
from openreel.protocols.shaped_routes import DATABASE_DOWN, STORE_DOWN
from openreel.service import job_service
from openreel.service.fetch_slots import PER_ACCOUNT, TOTAL
from openreel.service.standing import Standings
from openreel.settings import Settings
from openreel.storage.base import StorageUnavailable

from databases import DIALECTS, throwaway_database
from quick import QuickExecutor
from support import assert_contract, png, until

# One worker runs the module, so each dialect's app starts once.
pytestmark = pytest.mark.xdist_group("hostile_inputs")

BASE: dict[str, Any] = {"prompt": "p", "model": "veo-3.1-fast"}
CREDITS = 100

# (name, URL): each is a 400 wherever a URL is taken, before anything is fetched or stored.
BAD_URLS = [
    ("unclosed IPv6", "http://[::1/a.png"),
    ("port out of range", "http://example.com:99999/a.png"),
    ("port not a number", "http://example.com:http/a.png"),
    ("port zero", "http://example.com:0/a.png"),
    ("empty label", "http://a..b/a.png"),
    ("not an IP literal", "http://[zz]/a.png"),
    ("no host", "http:///a.png"),
    ("credentials", "http://user:pw@example.com/a.png"),
    ("unpaired surrogate", "http://\ud800.example/a.png"),
    ("NUL", "http://example.com/\x00.png"),
    ("tab", "http://example.com/\t.png"),
    ("too long", "http://example.com/" + "a" * MAX_URL_LENGTH),
    ("C1 control", "http://example.com/\x85.png"),
    ("line separator", "http://example.com/\u2028.png"),
    ("file scheme", "file:///etc/passwd"),
    ("relative", "/v2/files/a.png"),
]

# Targets that resolve only to refused addresses: a 400 at submit naming the setting that allows them.
PRIVATE_URLS = [
    "http://127.0.0.1:9/a.png",
    "http://localhost:9/a.png",
    "http://[::1]/a.png",
    "http://[::127.0.0.1]/a.png",  # IPv4-compatible IPv6
    "http://[64:ff9b:1::a00:1]/a.png",  # local-use NAT64
    "http://[64:ff9b::a9fe:a9fe]/a.png",  # well-known NAT64 prefix around 169.254.169.254
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/a.png",
]


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    "!!!",
    "a",
    encode(b"\xff\xfe"),
    encode(b"[1, 2]"),
    encode(b'["x"]'),
    encode(b'{"a": 1}'),
    encode(b"[null, null]"),
    encode(b'["2026-01-01T00:00:00", "not-a-uuid"]'),
    encode(b'["not-a-date", "00000000-0000-0000-0000-000000000000"]'),
    encode(b'["99999-01-01", "00000000-0000-0000-0000-000000000000"]'),
    encode(json.dumps(["2026-01-01T00:00:00+00:00", "\ud800"]).encode()),
    encode(b'["9999-12-31T23:59:59-14:00", "00000000-0000-0000-0000-000000000000"]'),
    encode(b'["0001-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'),
    encode(b'["0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"]'),
    "x" * 5000,
]


@pytest.fixture(scope="module", params=DIALECTS)
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with throwaway_database(request.param, root) as url:
        settings = Settings(
            data_dir=root / "data",
            database_url=url,
            rate_limit_per_minute=0,
            max_concurrent_jobs=1000,
            x264_preset="ultrafast",
        )
        app = create_app(settings, QuickExecutor(settings))
        with TestClient(app, base_url="http://testserver") as client:
            client.app.state.test_db_url = settings.resolved_database_url()
            yield client


def new_key(app: TestClient) -> str:
    database = Database(app.app.state.test_db_url)  # type: ignore[attr-defined]
    try:
        with database.session() as session:
            return accounts.create_key(session, name="hostile", initial_credits=CREDITS).raw
    finally:
        database.dispose()


def credits(app: TestClient, key: str) -> int:
    return int(app.get("/v2/me", headers={"X-API-Key": key}).json()["team"]["credits"])


def apiframe(app: TestClient, key: str, body: dict[str, Any], **headers: str) -> Any:
    raw = json.dumps(body).encode()  # ASCII escapes, so unpaired surrogates travel as \\udXXX
    return app.post(
        "/v2/videos/generate",
        content=raw,
        headers={"X-API-Key": key, "Content-Type": "application/json", **headers},
    )


def openai(app: TestClient, key: str, body: dict[str, Any], **headers: str) -> Any:
    return app.post(
        "/v1/videos",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
    )


def google(app: TestClient, key: str, body: dict[str, Any], **headers: str) -> Any:
    return app.post(
        "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
        content=json.dumps(body).encode(),
        headers={"x-goog-api-key": key, "Content-Type": "application/json", **headers},
    )


def url_fields(url: str) -> list[tuple[dict[str, Any], str]]:
    return [
        ({**BASE, "veoParams": {"image": url}}, "veoParams.image"),
        ({**BASE, "veoParams": {"last_frame": url}}, "veoParams.last_frame"),
        ({**BASE, "veoParams": {"reference_images": [url]}}, "veoParams.reference_images.0"),
        ({**BASE, "webhookUrl": url}, "webhookUrl"),
    ]


@pytest.mark.parametrize(("name", "url"), BAD_URLS, ids=[name for name, _ in BAD_URLS])
def test_malformed_urls_are_a_400_naming_the_field(app: TestClient, name: str, url: str) -> None:
    key = new_key(app)
    for body, path in url_fields(url):
        response = apiframe(app, key, body)
        assert response.status_code == 400, (name, path, response.text)
        assert path in response.json()["details"], (name, path, response.json())
    response = openai(app, key, {"prompt": "p", "input_reference": {"image_url": url}})
    assert response.status_code == 400, (name, response.text)
    assert response.json()["error"]["param"].startswith("input_reference")
    assert credits(app, key) == CREDITS


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_targets_are_refused_at_submit(app: TestClient, url: str) -> None:
    key = new_key(app)
    for body, path in url_fields(url)[:2] + url_fields(url)[3:]:
        response = apiframe(app, key, body)
        assert response.status_code == 400, (path, response.text)
        message = " ".join(response.json()["details"][path])
        assert "OPENREEL_ALLOW_PRIVATE_URLS" in message, message
        if "localhost" in url:  # what the server's DNS made of a name is not told
            assert "127.0.0.1" not in message and "::1" not in message, message
        if path != "webhookUrl":
            assert "POST /v2/uploads" in message, message
    response = openai(app, key, {"prompt": "p", "input_reference": {"image_url": url}})
    assert response.status_code == 400 and "OPENREEL_ALLOW_PRIVATE_URLS" in response.text
    assert credits(app, key) == CREDITS
    assert app.get("/v2/jobs", headers={"X-API-Key": key}).json()["jobs"] == []


def test_the_address_classification_refuses_embedded_private_ranges() -> None:
    import ipaddress

    refused = ("::127.0.0.1", "::8.8.8.8", "64:ff9b:1::808:808", "64:ff9b::a00:1", "::ffff:10.0.0.1")
    refused += ("fec0::1", "::ffff:0:a00:1", "::ffff:0:7f00:1")  # site-local; SIIT's 10.0.0.1, 127.0.0.1
    for address in refused:
        assert not netguard.public(ipaddress.ip_address(address)), address
    for address in ("8.8.8.8", "64:ff9b::808:808", "::ffff:0:808:808", "2606:4700::1111"):
        assert netguard.public(ipaddress.ip_address(address)), address


UNSTORABLE = ["a\x00b", "a\ud800b", "\udfff"]


@pytest.mark.parametrize("text", UNSTORABLE, ids=["NUL", "high surrogate", "low surrogate"])
def test_unstorable_strings_are_a_400_in_every_protocol(app: TestClient, text: str) -> None:
    key = new_key(app)
    for body in (
        {**BASE, "prompt": text},
        {**BASE, "veoParams": {"negative_prompt": text}},
        {**BASE, "model": text},
        {**BASE, "webhookUrl": "https://example.com/" + text},
    ):
        response = apiframe(app, key, body)
        assert response.status_code == 400, (body, response.text)
    for body in (
        {"prompt": text},
        {"prompt": "p", "negative_prompt": text},
        {"prompt": "p", "model": text},
        {"prompt": "p", text: "x"},
        {"prompt": "p", "input_reference": {"image_url": "https://example.com/" + text}},
    ):
        response = openai(app, key, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["message"]
    for body in (
        {"instances": [{"prompt": text}]},
        {"instances": [{"prompt": "p"}], "parameters": {"negativePrompt": text}},
        {"instances": [{"prompt": "p"}], "parameters": {"aspectRatio": text}},
        {"instances": [{"prompt": "p"}], "parameters": {"labels": {text: "v"}}},
        {"instances": [{"prompt": "p"}], "parameters": {"labels": {"k": text}}},
        {"instances": [{"prompt": "p"}], "parameters": {"sampleCount": 1}, text: 1},
    ):
        response = google(app, key, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    fetched = app.post(
        "/v1beta1/publishers/google/models/veo-3.1-fast-generate-001:fetchPredictOperation",
        content=json.dumps({"operationName": f"projects/p/locations/l/operations/{text}"}).encode(),
        headers={"x-goog-api-key": key, "Content-Type": "application/json"},
    )
    assert fetched.status_code in (400, 404), fetched.text
    assert credits(app, key) == CREDITS
    listed = app.get("/v2/jobs", headers={"X-API-Key": key})
    assert listed.status_code == 200 and listed.json()["jobs"] == []


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_tampered_cursors_are_a_400(app: TestClient, cursor: str) -> None:
    key = new_key(app)
    response = app.get("/v2/jobs", params={"cursor": cursor}, headers={"X-API-Key": key})
    assert response.status_code == 400, response.text
    assert "cursor" in response.json()["details"]
    response = app.get("/v1/videos", params={"after": cursor}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "after"


def test_list_filters_are_never_a_server_error(app: TestClient) -> None:
    key = new_key(app)
    for params in ({"model": "a\x00b"}, {"model": "x" * 10_000}, {"search": "not-a-uuid"}):
        response = app.get("/v2/jobs", params=params, headers={"X-API-Key": key})
        assert response.status_code in (200, 400), (params, response.text)


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_idempotency_key_is_a_400(app: TestClient, value: str) -> None:
    key = new_key(app)
    body = {**BASE, "veoParams": {"duration": 4}}
    response = apiframe(app, key, body, **{"Idempotency-Key": value})
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["details"]
    response = openai(app, key, {"prompt": "p", "seconds": "4"}, **{"Idempotency-Key": value})
    assert response.status_code == 400 and response.json()["error"]["param"] == "Idempotency-Key"
    response = google(app, key, {"instances": [{"prompt": "p"}]}, **{"Idempotency-Key": value})
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]["message"]
    assert credits(app, key) == CREDITS


def test_replaying_the_key_of_a_deleted_job_says_so(app: TestClient, tmp_path: Path) -> None:
    key = new_key(app)
    headers = {"X-API-Key": key}
    body = {**BASE, "veoParams": {"duration": 8, "resolution": "1080p"}}
    job_id = apiframe(app, key, body, **{"Idempotency-Key": "k1"}).json()["jobId"]
    assert app.post(f"/v2/jobs/{job_id}/cancel", headers=headers).status_code in (200, 409)
    assert app.delete(f"/v2/jobs/{job_id}", headers=headers).status_code == 200
    replay = apiframe(app, key, body, **{"Idempotency-Key": "k1"})
    assert replay.status_code == 409, replay.text
    assert "deleted" in replay.json()["error"]
    assert credits(app, key) == CREDITS


def test_whole_numbers_written_with_a_fraction_are_the_integers_they_are(app: TestClient) -> None:
    """4.0 is 4 to JSON Schema (the contract's) and to JavaScript, whose clients send it so."""
    key = new_key(app)
    params = {"duration": 4.0, "seed": 7.0, "sample_count": 1.0, "generate_audio": False}
    accepted = apiframe(app, key, {**BASE, "veoParams": params})
    assert accepted.status_code == 202, accepted.text
    job = app.get(f"/v2/jobs/{accepted.json()['jobId']}", headers={"X-API-Key": key}).json()
    echoed = job["input"]["veoParams"]
    assert (echoed["duration"], echoed["seed"]) == (4, 7) and isinstance(echoed["duration"], int)


def test_another_accounts_upload_link_is_no_image_of_this_one(app: TestClient) -> None:
    """A signed upload link works as a download pass for whoever reads it; a job takes only its own
    account's uploads, in each protocol that takes a link, and a refusal costs nothing."""
    owner, other = new_key(app), new_key(app)
    link = app.post(
        "/v2/uploads", headers={"X-API-Key": owner}, files={"file": ("a.png", png(64, 64), "image/png")}
    ).json()["url"]
    refused = apiframe(app, other, {**BASE, "veoParams": {"duration": 4, "image": link}})
    assert refused.status_code == 400, refused.text
    assert "no upload of this account" in refused.json()["details"]["veoParams.image"][0]
    as_openai = openai(app, other, {"prompt": "p", "input_reference": {"image_url": link}})
    assert as_openai.status_code == 400 and "no upload of this account" in as_openai.text, as_openai.text
    assert app.get("/v2/me", headers={"X-API-Key": other}).json()["team"]["credits"] == CREDITS
    assert app.get("/v2/jobs", headers={"X-API-Key": other}).json()["jobs"] == []
    mine = apiframe(app, owner, {**BASE, "veoParams": {"duration": 4, "image": link}})
    assert mine.status_code == 202, mine.text


def test_a_replay_answers_whatever_became_of_the_engine_and_the_upload_since(app: TestClient) -> None:
    """An Idempotency-Key's replay is the first answer for as long as the key lasts (24 h): not refused
    because the engine has failed since, nor because the upload the request named has expired and gone
    (uploads last 2 h)."""
    key = new_key(app)
    services = app.app.state.services  # type: ignore[attr-defined]
    file_id = app.post(
        "/v2/uploads", headers={"X-API-Key": key}, files={"file": ("a.png", png(64, 64), "image/png")}
    ).json()["id"]
    body = {"prompt": "p", "input_reference": {"file_id": file_id}}
    first = openai(app, key, body, **{"Idempotency-Key": "i1"})
    apiframed = apiframe(app, key, {**BASE, "veoParams": {"duration": 4}}, **{"Idempotency-Key": "a1"})
    assert first.status_code == 200 and apiframed.status_code == 202, (first.text, apiframed.text)
    with services.db.session() as session:
        session.execute(delete(Upload).where(Upload.id == file_id))  # expired and swept
    again = openai(app, key, body, **{"Idempotency-Key": "i1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    assert again.headers["idempotent-replayed"] == "true"
    anew = openai(app, key, body, **{"Idempotency-Key": "i2"})
    assert anew.status_code == 400 and f"no upload {file_id!r}" in anew.json()["error"]["message"]
    executor = services.dispatcher._executor
    working = executor._state
    executor._state = replace(working, error="CUDA out of memory")
    try:
        replayed = apiframe(app, key, {**BASE, "veoParams": {"duration": 4}}, **{"Idempotency-Key": "a1"})
        refused = apiframe(app, key, {**BASE, "veoParams": {"duration": 4}}, **{"Idempotency-Key": "a2"})
    finally:
        executor._state = working
    assert replayed.status_code == 202 and replayed.json()["jobId"] == apiframed.json()["jobId"]
    assert refused.status_code == 503 and "CUDA out of memory" in refused.json()["error"]


def test_a_replay_of_a_cancelled_jobs_request_reads_failed_as_the_contract_has_it(app: TestClient) -> None:
    """The contract's JobAccepted knows no CANCELLED (its webhook event is "failed" too)."""
    key = new_key(app)
    body = {**BASE, "veoParams": {"duration": 4, "generate_audio": False}}
    job_id = apiframe(app, key, body, **{"Idempotency-Key": "c1"}).json()["jobId"]
    database = Database(app.app.state.test_db_url)  # type: ignore[attr-defined]
    try:
        with database.session() as session:  # cancelled, whether or not it has rendered meanwhile
            session.execute(update(Job).where(Job.id == job_id).values(status=jobs.CANCELLED))
    finally:
        database.dispose()
    replay = apiframe(app, key, body, **{"Idempotency-Key": "c1"})
    assert replay.status_code == 202 and replay.json() == {"jobId": job_id, "status": "FAILED"}
    assert_contract(replay.json(), "JobAccepted")
    assert app.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": key}).json()["status"] == "CANCELLED"


def test_a_cancel_that_loses_to_the_jobs_end_says_how_it_ended(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ends between the cancel's read and its update (PostgreSQL reads without the write lock)."""
    key = new_key(app)
    job_id = apiframe(app, key, {**BASE, "veoParams": {"duration": 4}}).json()["jobId"]

    def ended_meanwhile(session: Session, job_id: str, *args: object, **kwargs: object) -> bool:
        ended = update(Job).where(Job.id == job_id).values(status=jobs.FAILED, error="another server's doing")
        session.execute(ended.execution_options(synchronize_session=False))
        return False

    monkeypatch.setattr(jobs, "end_with_refund", ended_meanwhile)
    refused = app.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
    assert refused.status_code == 409 and "already FAILED" in refused.json()["error"], refused.text


def test_an_upload_whose_row_cannot_be_written_leaves_no_file(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key(app)
    root = app.app.state.services.storage.root  # type: ignore[attr-defined]

    def files() -> set[Path]:
        """Every stored file but the results, which renders of the module's earlier jobs may be writing."""
        return {p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "results"}

    stored = files()

    def locked() -> None:
        raise OperationalError("INSERT INTO uploads", {}, Exception("database is locked"))

    monkeypatch.setattr(app.app.state.services.db, "session", locked)  # type: ignore[attr-defined]
    refused = app.post(
        "/v2/uploads", headers={"X-API-Key": key}, files={"file": ("a.png", png(8, 8), "image/png")}
    )
    assert refused.status_code == 503 and "database is unavailable" in refused.json()["error"]
    assert files() == stored


def raise_(error: Exception) -> None:
    raise error


def test_a_google_job_submitted_as_the_database_goes_down_is_answered_not_refused(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Charged by the time its queue place is read: a 503 then would have its client submit it again."""
    key = new_key(app)
    down = OperationalError("SELECT", {}, Exception("connection refused"))
    monkeypatch.setattr(Standings, "of_server", lambda *args: raise_(down))
    answer = google(app, key, {"instances": [{"prompt": "p"}], "parameters": {"durationSeconds": 4}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"].startswith("models/veo-3.1-fast-generate-preview/operations/")
    assert credits(app, key) == CREDITS - 5


def test_the_database_down_is_a_503_to_retry_in_each_surfaces_shape(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the request's fault, nor a crash: clients retry after Retry-After, the log says what it met."""
    key = new_key(app)
    services = app.app.state.services  # type: ignore[attr-defined]

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(services.db, "session", down)
    monkeypatch.setattr(services.db, "read", down)
    apiframe_list = app.get("/v2/jobs", headers={"X-API-Key": key})
    google = app.get(f"/v1beta/operations/{'0' * 32}", headers={"x-goog-api-key": key})
    openai = app.get("/v1/videos", headers={"Authorization": f"Bearer {key}"})
    submitted = apiframe(app, key, {**BASE, "veoParams": {"duration": 4}})
    for answer in (apiframe_list, google, openai, submitted):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
    assert apiframe_list.json() == submitted.json() == {"error": DATABASE_DOWN.message}
    assert google.json()["error"] == {"code": 503, "message": DATABASE_DOWN.message, "status": "UNAVAILABLE"}
    assert openai.json()["error"]["code"] == "database_unavailable"
    assert openai.headers.get("x-should-retry") != "false"

    # A connection the server dropped, which psycopg2 may report as a plain DatabaseError: an outage.
    dropped = DatabaseError("SELECT", {}, Exception("SSL SYSCALL error: EOF detected"))
    dropped.connection_invalidated = True
    monkeypatch.setattr(services.db, "read", lambda *args, **kwargs: raise_(dropped))
    assert app.get("/v2/jobs", headers={"X-API-Key": key}).status_code == 503

    # A fault of the query or the schema, which SQLite reports as an OperationalError too: a 500.
    with create_engine("sqlite://").connect() as connection, pytest.raises(OperationalError) as fault:
        connection.execute(text("SELECT * FROM no_such_table"))

    def broken(*args: object, **kwargs: object) -> None:
        raise fault.value

    monkeypatch.setattr(services.db, "read", broken)
    with pytest.raises(OperationalError, match="no such table"):
        app.get("/v2/jobs", headers={"X-API-Key": key})


def test_a_deleted_jobs_video_the_store_refused_goes_once_it_answers(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job is deleted whatever the store says; its video, kept in the outbox, is deleted by the
    housekeeping's next round once the store answers again."""
    key = new_key(app)
    headers = {"X-API-Key": key}
    services = app.app.state.services  # type: ignore[attr-defined]
    job_id = apiframe(app, key, {**BASE, "veoParams": {"duration": 4}}).json()["jobId"]
    until(
        lambda: app.get(f"/v2/jobs/{job_id}", headers=headers).json()["status"] == "COMPLETED", 60, "the job"
    )
    [video] = [key for key in _stored(services.storage.root) if job_id in key]

    def refuse(key: str) -> None:
        raise StorageUnavailable(f"deleting {key} from S3: SlowDown")

    monkeypatch.setattr(services.storage, "delete", refuse)
    assert app.delete(f"/v2/jobs/{job_id}", headers=headers).status_code == 200
    assert app.get(f"/v2/jobs/{job_id}", headers=headers).status_code == 404
    assert services.storage.exists(video)
    monkeypatch.undo()
    with Session(create_engine(app.app.state.test_db_url)) as session, session.begin():  # type: ignore[attr-defined]
        row = session.get(PendingDeletion, video)
        assert row is not None and row.attempts == 1 and "SlowDown" in (row.last_error or "")
        row.next_attempt_at = row.next_attempt_at - timedelta(hours=1)
    assert services.housekeeper.retry_deletions() == 1
    assert not services.storage.exists(video)


def _stored(root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in root.rglob("*.mp4")]


def test_the_file_store_out_of_reach_is_a_503_to_retry_in_each_surfaces_shape(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 not answering, or refusing the credentials: neither the request's fault nor a crash, and
    nothing is charged."""
    key = new_key(app)
    services = app.app.state.services  # type: ignore[attr-defined]
    upload = app.post(
        "/v2/uploads", headers={"X-API-Key": key}, files={"file": ("a.png", png(64, 64), "image/png")}
    ).json()

    def out_of_reach(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("looking up uploads/x.png in S3: AccessDenied")

    for method in ("exists", "serve", "commit"):
        monkeypatch.setattr(services.storage, method, out_of_reach)
    served = app.get(upload["url"])
    submitted = apiframe(app, key, {**BASE, "veoParams": {"duration": 4, "image": upload["url"]}})
    referenced = openai(app, key, {"prompt": "p", "input_reference": {"file_id": upload["id"]}})
    inline = base64.b64encode(png(8, 8)).decode()
    image = {"bytesBase64Encoded": inline, "mimeType": "image/png"}
    google_submit = google(app, key, {"instances": [{"prompt": "p", "image": image}]})
    for answer in (served, submitted, referenced, google_submit):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
    assert served.json() == submitted.json() == {"error": STORE_DOWN.message}
    assert referenced.json()["error"]["code"] == "storage_unavailable"
    assert google_submit.json()["error"] == {
        "code": 503,
        "message": STORE_DOWN.message,
        "status": "UNAVAILABLE",
    }
    assert credits(app, key) == CREDITS


def test_an_upload_whose_file_cannot_be_stored_leaves_no_row_or_one_naming_what_may_be_left(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row is written first (a crash after it leaves a row the sweep removes at expiry), and taken
    back when the file does not make it into storage; kept when the file, which may have arrived all the
    same, cannot be deleted either: the sweep deletes both when the row expires."""
    key = new_key(app)
    services = app.app.state.services  # type: ignore[attr-defined]

    def full(staged: Path, storage_key: str) -> None:
        raise OSError(28, "No space left on device")

    def rows() -> list[Upload]:
        with services.db.read() as session:
            found = accounts.find_key(session, key)
            assert found is not None
            return list(session.scalars(select(Upload).where(Upload.account_id == found.account_id)))

    def upload() -> None:
        with pytest.raises(OSError, match="No space left"):
            app.post(
                "/v2/uploads", headers={"X-API-Key": key}, files={"file": ("a.png", png(8, 8), "image/png")}
            )

    monkeypatch.setattr(services.storage, "commit", full)
    upload()
    assert rows() == []
    assert not list((services.storage.root / "uploads").glob(".*.part"))  # results/: other tests' renders

    def unreachable(storage_key: str) -> None:
        raise OSError(113, "No route to host")

    monkeypatch.setattr(services.storage, "delete", unreachable)
    upload()  # the store's error, not the deletion's
    assert len(rows()) == 1


def test_image_fetches_at_submit_are_bounded_for_the_server_and_for_each_account(app: TestClient) -> None:
    """Slow image hosts cannot take every request thread, nor one account the others' share of them:
    past either bound a submit is refused at once, for now (a 429 the client retries)."""
    key = new_key(app)
    services = app.app.state.services  # type: ignore[attr-defined]
    with services.db.read() as session:
        found = accounts.find_key(session, key)
        assert found is not None
    body = {**BASE, "veoParams": {"image": "https://example.com/a.png"}}
    holders = [found.account_id] * PER_ACCOUNT, [f"other-{n}" for n in range(TOTAL)]
    refusals = []
    for held in holders:
        for account in held:
            services.fetches.take(account)
        try:
            response = apiframe(app, key, body)
            sora = openai(
                app, key, {"prompt": "p", "input_reference": {"image_url": "https://example.com/a.png"}}
            )
        finally:
            for account in held:
                services.fetches.give_back(account)
        assert response.status_code == sora.status_code == 429 and response.headers["retry-after"] == "5"
        assert sora.json()["error"]["code"] == "rate_limit_exceeded" and sora.headers["retry-after"] == "5"
        refusals.append(response.json()["error"])
    assert refusals[0].startswith(f"this account is already fetching images for {PER_ACCOUNT} requests")
    assert refusals[1].startswith("the server is fetching too many images just now")
    services.fetches.take(found.account_id)  # every slot given back
    services.fetches.give_back(found.account_id)
    assert credits(app, key) == CREDITS


def test_an_image_host_not_looked_up_for_want_of_a_lookup_slot_is_a_429(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name lookup this process allows under way: the URL was never judged, and the same request
    may pass in a moment."""
    key = new_key(app)
    lookups = threading.BoundedSemaphore(1)
    lookups.acquire()
    monkeypatch.setattr(netguard, "_LOOKUPS", lookups)
    monkeypatch.setattr(app.app.state.services.settings, "fetch_timeout_s", 0.2)  # type: ignore[attr-defined]
    response = apiframe(app, key, {**BASE, "veoParams": {"image": "https://images.example.com/a.png"}})
    assert response.status_code == 429 and response.headers["retry-after"] == "5", response.text
    assert (
        response.json()["error"]
        == "the server is looking up too many host names just now; retry in a few seconds"
    )
    assert credits(app, key) == CREDITS


def test_a_webhook_host_that_does_not_resolve_yet_is_accepted(app: TestClient) -> None:
    """Only a refused address is final at submit: DNS may catch up before the job ends."""
    key = new_key(app)
    body = {
        **BASE,
        "veoParams": {"duration": 4, "generate_audio": False},
        "webhookUrl": "https://hooks.invalid/x",
    }
    accepted = apiframe(app, key, body)
    assert accepted.status_code == 202, accepted.text
    headers = {"X-API-Key": key}
    assert app.post(f"/v2/jobs/{accepted.json()['jobId']}/cancel", headers=headers).status_code in (200, 409)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_without_its_content_type_is_told_what_to_send(
    app: TestClient, content_type: str | None
) -> None:
    """curl's -d, for one, sends JSON as a form unless told otherwise: every protocol names the header."""
    key = new_key(app)
    hint = "Send the body as JSON with the header Content-Type: application/json"
    headers = {"Content-Type": content_type} if content_type else {}
    raw = json.dumps({**BASE}).encode()
    response = app.post("/v2/videos/generate", content=raw, headers={"X-API-Key": key, **headers})
    assert response.status_code == 400 and response.json()["details"] == {"body": [hint]}, response.text
    google_raw = json.dumps({"instances": [{"prompt": "p"}]}).encode()
    response = app.post(
        "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
        content=google_raw,
        headers={"x-goog-api-key": key, **headers},
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["status"] == "INVALID_ARGUMENT", response.text
    assert error["details"][0]["fieldViolations"] == [{"field": "body", "description": hint}]
    response = app.post("/v1/videos", content=raw, headers={"Authorization": f"Bearer {key}", **headers})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "unsupported_content_type", response.text
    assert "as JSON with the header Content-Type: application/json" in error["message"]
    assert credits(app, key) == CREDITS


LOCAL_IMAGES = [
    "first.png",
    "/home/me/first.png",
    "C:\\Users\\me\\first.png",
    base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(4000)).decode(),  # longer than any URL may be
    "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(),
]


@pytest.mark.parametrize("value", LOCAL_IMAGES, ids=["name", "path", "windows path", "base64", "data URI"])
def test_an_image_that_is_not_a_url_is_told_to_upload_it(app: TestClient, value: str) -> None:
    key = new_key(app)
    for body, path in url_fields(value)[:3]:
        response = apiframe(app, key, body)
        assert response.status_code == 400, (path, response.text)
        message = " ".join(response.json()["details"][path])
        assert "http(s) URL" in message and "upload it first with POST /v2/uploads" in message, message
        assert "multipart field 'file'" in message, message
    webhook = apiframe(app, key, {**BASE, "webhookUrl": value}).json()["details"]["webhookUrl"]
    assert not any("POST /v2/uploads" in m for m in webhook), webhook
    assert credits(app, key) == CREDITS


def test_expired_and_altered_file_links_are_told_apart(app: TestClient) -> None:
    signer = app.app.state.services.signer  # type: ignore[attr-defined]
    job_id = "0b7f2d8e-5a4c-4c36-9b1e-3f7d2a6c8e10"
    expired = signer.path(f"results/{job_id}/1.mp4", 1_700_000_000)
    response = app.get(expired)
    assert response.status_code == 410, response.text
    message = response.json()["error"]
    assert "expired at 2023-11-14T22:13:20.000Z" in message and f"GET /v2/jobs/{job_id}" in message
    upload = app.get(signer.path("uploads/gone.png", 1_700_000_000))
    assert upload.status_code == 410 and "upload the file again" in upload.json()["error"]
    fresh = signer.path(f"results/{job_id}/1.mp4", 4_000_000_000)
    for altered in (
        fresh.replace("sig=", "sig=0"),
        fresh.replace("exp=4", "exp=5"),
        expired.replace("sig=", "sig=0"),  # an expiry is only reported for a link this server made
        fresh.split("&sig=")[0],
        fresh.split("sig=")[0] + "sig=%C3%A9",
    ):
        response = app.get(altered)
        assert response.status_code == 403, (altered, response.text)
        assert "signature does not match" in response.json()["error"], response.text


def test_long_lists_and_numbers_are_refused_before_their_items_are_read(app: TestClient) -> None:
    """A body may be large (Google's inline images): a list of 20,000 items is refused at its length,
    a number of 5,000 digits is a 400 in its protocol's shape, and nothing is charged."""
    key = new_key(app)
    response = google(app, key, {"instances": [{}] * 20_000})
    error = response.json()["error"]
    assert response.status_code == 400 and error["status"] == "INVALID_ARGUMENT", response.text
    assert "instances" in json.dumps(error["details"]), error
    two = google(app, key, {"instances": [{"prompt": "a"}, {"prompt": "b"}]}).json()["error"]
    assert "exactly one instance is supported; got 2" in json.dumps(two), two  # the rule's own words
    labels = google(app, key, {"instances": [{"prompt": "p"}], "labels": {str(n): "x" for n in range(65)}})
    assert labels.status_code == 400 and "labels" in labels.text, labels.text
    for field in ("seconds", "seed"):
        huge = openai(app, key, {"prompt": "p", field: "9" * 5000})
        assert huge.status_code == 400 and huge.json()["error"]["param"] == field, huge.text
    assert credits(app, key) == CREDITS


def test_a_request_refused_for_its_credits_or_active_jobs_fetches_and_stores_no_image(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else each refused request, tiny itself, would have the server download and keep its images."""
    key = new_key(app)
    services = app.app.state.services  # type: ignore[attr-defined]
    with services.db.read() as session:
        found = accounts.find_key(session, key)
        assert found is not None
    fetched: list[str] = []
    monkeypatch.setattr(job_service, "fetch", lambda url, *args, **kwargs: fetched.append(url) or b"")
    inline = {"bytesBase64Encoded": base64.b64encode(png(64, 64)).decode(), "mimeType": "image/png"}
    # As each protocol answers an account out of credits (Google and OpenAI: 429), or at its active jobs.
    refusals = (
        ("balance", 0, [402, 429, 429]),
        ("active_jobs", services.settings.max_concurrent_jobs, [429] * 3),
    )
    for column, value, statuses in refusals:
        with services.db.session() as session:
            session.execute(update(Account).where(Account.id == found.account_id).values({column: value}))
        linked = apiframe(app, key, {**BASE, "veoParams": {"image": "https://example.com/a.png"}})
        by_url = openai(
            app, key, {"prompt": "p", "input_reference": {"image_url": "https://example.com/b.png"}}
        )
        sent = google(app, key, {"instances": [{"prompt": "p", "image": inline}]})
        assert [r.status_code for r in (linked, by_url, sent)] == statuses, (linked.text, sent.text)
        with services.db.session() as session:
            session.execute(
                update(Account).where(Account.id == found.account_id).values(balance=CREDITS, active_jobs=0)
            )
    assert fetched == []
    with services.db.read() as session:
        assert session.scalars(select(Upload).where(Upload.account_id == found.account_id)).all() == []


def test_a_json_body_of_more_values_than_a_request_has_is_refused_before_it_is_parsed(
    app: TestClient,
) -> None:
    """Within the byte cap Google's inline images need, a body of small values would cost the server
    gigabytes to parse; a prompt full of commas is still a request."""
    key = new_key(app)
    many = [{}] * (MAX_JSON_VALUES + 1)
    answers = (
        apiframe(app, key, {**BASE, "extra": many}),
        google(app, key, {"instances": many}),
        openai(app, key, {"prompt": "p", "extra": many}),
    )
    assert [a.status_code for a in answers] == [400] * 3, [a.text[:200] for a in answers]
    assert answers[0].json()["details"] == {"body": [f"holds more than {MAX_JSON_VALUES} JSON values"]}
    assert answers[1].json()["error"]["status"] == "INVALID_ARGUMENT"
    assert answers[2].json()["error"]["code"] == "invalid_json"
    assert all("JSON values" in a.text for a in answers)
    commas = apiframe(app, key, {**BASE, "prompt": "a, " * 1333, "veoParams": {"duration": 4}})
    assert commas.status_code == 202, commas.text
