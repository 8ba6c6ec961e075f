"""Where inputs and results live (local files or S3-compatible object storage), and signed links."""

from __future__ import annotations

from openreel.settings import Settings
from openreel.storage.base import Storage
from openreel.storage.local import LocalStorage


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from openreel.storage.s3 import S3Storage

        assert settings.s3_bucket is not None  # Settings refuse s3 without one
        return S3Storage(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            spool_dir=settings.data_dir / "spool",
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
    return LocalStorage(settings.data_dir / "files")
