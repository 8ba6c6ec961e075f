"""The one settings object refuses what no part of the service could run, wherever it is built."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from openreel.cli import app
from openreel.settings import Settings


@pytest.mark.parametrize(
    ("field", "value"),
    [("engine", "ltx"), ("executor", "kubernetes"), ("storage", "gcs"), ("x264_preset", "quick")],
)
def test_unknown_names_are_refused_when_the_settings_are_built(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_s3_storage_without_a_bucket_is_refused_when_the_settings_are_built() -> None:
    with pytest.raises(ValidationError, match="OPENREEL_S3_BUCKET"):
        Settings(storage="s3")
    assert Settings(storage="s3", s3_bucket="clips").s3_bucket == "clips"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 70000),
        ("job_timeout_s", 0),
        ("max_attempts", 0),
        ("upload_ttl_s", -5),
        ("webhook_attempts", 0),
        ("rate_limit_burst", -1),
        ("max_concurrent_jobs", 0),
        ("fetch_timeout_s", 0),
    ],
)
def test_values_no_service_could_run_with_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_half_a_pair_of_s3_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="OPENREEL_S3_SECRET_ACCESS_KEY"):
        Settings(storage="s3", s3_bucket="clips", s3_access_key_id="AKIA")
    both = Settings(storage="s3", s3_bucket="clips", s3_access_key_id="AKIA", s3_secret_access_key="s")
    assert (
        both.s3_secret_access_key == "s"
        and Settings(storage="s3", s3_bucket="clips").s3_access_key_id is None
    )


def test_the_cli_says_which_setting_is_wrong_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = CliRunner().invoke(app, ["serve", "--engine", "ltx", "--data-dir", str(tmp_path)])
    assert out.exit_code == 2
    assert "engine: Input should be 'tiny' or 'ltx2'" in out.output
    assert "Traceback" not in out.output
    s3 = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path)], env={"OPENREEL_STORAGE": "s3"})
    assert s3.exit_code == 2
    assert "Invalid value: storage s3 needs a bucket: set OPENREEL_S3_BUCKET" in s3.output


def test_the_data_dir_and_its_secrets_are_this_users_alone(tmp_path: Path) -> None:
    """The ledger's key hashes sign webhooks, the secret signs links, the videos are the accounts':
    another user of the machine reads none of them. The secret is never readable by others, not even
    for a moment (written under its final mode)."""
    settings = Settings(data_dir=tmp_path / "new" / "data")
    settings.made_data_dir()
    leftover = settings.data_dir / "secret.key.tmp"  # from a try that died, readable by all
    leftover.write_text("x")
    leftover.chmod(0o644)
    secret = settings.resolved_secret()
    assert len(secret) == 64 and settings.resolved_secret() == secret
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((settings.data_dir / "secret.key").stat().st_mode) == 0o600
    assert [p.name for p in settings.data_dir.iterdir()] == ["secret.key"]
