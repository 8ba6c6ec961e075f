"""Results and uploads in S3-compatible object storage, over real HTTP against moto's S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from openreel.storage.base import StorageUnavailable
from openreel.storage.s3 import S3Storage

from support import LiveServer, free_port, mp4_summary, png, quick_server, wait_for

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = pytest.mark.xdist_group("s3")

BUCKET = "openreel-media"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=BUCKET)
    yield endpoint
    moto.stop()


@pytest.fixture(scope="module")
def s3_server(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "OPENREEL_STORAGE": "s3",
        "OPENREEL_S3_BUCKET": BUCKET,
        "OPENREEL_S3_PREFIX": "prod",
        "OPENREEL_S3_ENDPOINT_URL": s3_endpoint,
        "OPENREEL_S3_REGION": "us-east-1",
        "OPENREEL_S3_ACCESS_KEY_ID": "testing",
        "OPENREEL_S3_SECRET_ACCESS_KEY": "testing",
        "OPENREEL_X264_PRESET": "ultrafast",
    }
    with quick_server(tmp_path_factory.mktemp("s3"), env) as live:
        yield live


def objects(endpoint: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_uploads_and_results_live_in_the_bucket(s3_server: LiveServer, s3_endpoint: str) -> None:
    key = s3_server.new_key(credits=20)
    picture = png(320, 200, (200, 40, 40))
    with s3_server.client(key) as client:
        upload = client.post("/v2/uploads", files={"file": ("red.png", picture)}).json()
        assert upload["url"].startswith(s3_server.url + "/v2/files/uploads/")
        redirected = httpx.get(upload["url"])
        assert redirected.status_code == 307 and redirected.headers["location"].startswith(s3_endpoint)
        assert httpx.get(upload["url"], follow_redirects=True).content == picture

        job_id = client.post(
            "/v2/videos/generate",
            json={
                "prompt": "red",
                "model": "veo-3.1-fast",
                "veoParams": {"duration": 4, "image": upload["url"]},
            },
        ).json()["jobId"]
        job = wait_for(client, job_id)
    assert job["status"] == "COMPLETED", job
    video_url = job["result"]["videoUrl"]
    assert (
        video_url.startswith(f"{s3_endpoint}/{BUCKET}/prod/results/{job_id}/") and "Signature=" in video_url
    )
    clip = httpx.get(video_url)
    assert clip.status_code == 200
    assert mp4_summary(clip.content) == {"size": (1280, 720), "frames": 96, "fps": 24.0, "audio": True}
    partial = httpx.get(video_url, headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and partial.content == clip.content[:100]
    stored = objects(s3_endpoint)
    assert f"prod/results/{job_id}/1.mp4" in stored and f"prod/uploads/{upload['id']}.png" in stored

    proxied = httpx.get(
        f"{s3_server.url}/v1/videos/video_{job_id.replace('-', '')}/content",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert proxied.status_code == 200 and proxied.content == clip.content

    with s3_server.client(key) as client:
        assert client.delete(f"/v2/jobs/{job_id}").status_code == 200
    assert f"prod/results/{job_id}/1.mp4" not in objects(s3_endpoint)
    assert not list(Path(s3_server.data_dir / "spool").glob("*"))


def test_a_missing_object_is_gone_and_a_store_out_of_reach_is_not(s3_endpoint: str, tmp_path: Path) -> None:
    """What a job's preparation (and a request) tells apart: a file that is not there fails the job, an
    outage does not (a request meeting it is a 503 to retry)."""
    options = {"spool_dir": tmp_path, "region": "us-east-1", "access_key_id": "t", "secret_access_key": "t"}
    storage = S3Storage(bucket=BUCKET, endpoint_url=s3_endpoint, **options)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("uploads/never.png")
    denied = S3Storage(bucket="no-such-bucket", endpoint_url=s3_endpoint, **options)
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        denied.read_bytes("uploads/never.png")
    assert not storage.exists("uploads/never.png")
    unreachable = S3Storage(bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{free_port()}", **options)
    with pytest.raises(StorageUnavailable, match="Could not connect"):
        unreachable.read_bytes("uploads/never.png")
    with pytest.raises(StorageUnavailable, match=r"looking up uploads/never\.png in S3: Could not connect"):
        unreachable.exists("uploads/never.png")
