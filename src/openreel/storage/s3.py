"""S3-compatible object storage (AWS S3, MinIO-compatible servers, moto, ...), through boto3.

Results are handed out as presigned GET URLs, so the bytes (and HTTP Range) come from the object
store, not the API server. Staged files are spooled on local disk and uploaded on ``commit``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openreel.storage.base import Redirect, StorageUnavailable, Stream

CHUNK = 1024 * 1024
MISSING = ("404", "NoSuchKey", "NotFound")  # S3's error codes for an object that is not there


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        spool_dir: Path,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.spool = spool_dir.resolve()
        self.spool.mkdir(parents=True, exist_ok=True)
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.prefix + key

    def staging_path(self, key: str) -> Path:
        self._key(key)
        fd, name = tempfile.mkstemp(dir=self.spool, prefix=".", suffix=".part")
        os.close(fd)
        return Path(name)

    def commit(self, staged: Path, key: str) -> None:
        try:
            self._s3.upload_file(str(staged), self.bucket, self._key(key))
        finally:
            staged.unlink(missing_ok=True)

    @staticmethod
    @contextmanager
    def _asking(doing: str, key: str) -> Iterator[None]:
        """S3's failures in openreel's terms: an object that is not there is ``FileNotFoundError``, any
        other (no connection, a read cut short, the bucket missing, the credentials refused)
        ``StorageUnavailable``. Credentials without ``s3:ListBucket`` get a 403 for a missing object:
        that reads as the store refusing."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in MISSING:
                raise FileNotFoundError(key) from exc
            raise StorageUnavailable(f"{doing} {key} in S3: {code}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{doing} {key} in S3: {exc}") from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with self._asking("looking up", key):
                return self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except (FileNotFoundError, ValueError):
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def read_bytes(self, key: str) -> bytes:
        with self._asking("reading", key):
            return self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def signed_url(self, key: str, ttl_s: int) -> str | None:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=ttl_s
        )

    def serve(
        self, key: str, media_type: str, *, redirect: bool, disposition: str | None = None
    ) -> Redirect | Stream | None:
        if redirect:
            if self._head(key) is None:
                return None
            # The store sends the type and disposition this server would (objects are stored untyped).
            params = {"Bucket": self.bucket, "Key": self._key(key), "ResponseContentType": media_type}
            if disposition:
                params["ResponseContentDisposition"] = disposition
            return Redirect(self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=300))
        try:  # one request: the object's answer has its length, and says when it is not there
            with self._asking("reading", key):
                stored = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except (FileNotFoundError, ValueError):
            return None
        body = stored["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return Stream(chunks(), int(stored["ContentLength"]))

    def remove_partials(self) -> int:
        stale = list(self.spool.glob(".*.part"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
