"""The one typed settings object. Every field reads ``OPENREEL_<FIELD>`` from the environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openreel.engine import EngineName

if TYPE_CHECKING:
    from openreel.engine import EngineOptions
    from openreel.engine.weights import Checkpoint

ExecutorName = Literal["local", "ray"]
StorageName = Literal["local", "s3"]
# x264's own preset names, fastest first.
X264Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENREEL_", extra="ignore")

    data_dir: Path = Field(
        default=Path("openreel-data"),
        description="database, uploads, results, signing secret, tiny weights; created readable by its"
        " user alone",
    )
    engine: EngineName = Field(
        default="tiny", description="`tiny` (CPU, random weights) or `ltx2` (a real checkpoint)"
    )
    checkpoint: str | None = Field(
        default=None,
        description="for `ltx2`: an HF repo id (`org/name` or `org/name@revision`) or a local diffusers "
        "directory",
    )
    distilled_lora: str | None = Field(
        default=None,
        description="for `ltx2` dev weights: the distilled LoRA, a local `.safetensors` or "
        "`org/name[@revision]:file.safetensors`; unset: the one beside the checkpoint",
    )
    upsampler: str | None = Field(
        default=None,
        description="for `ltx2`: the x2 latent upsampler, a local folder or "
        "`org/name[@revision][:subfolder]`; unset: the checkpoint's `latent_upsampler/`",
    )
    reference_adapter: str | None = Field(
        default=None,
        description="the IC-LoRA serving `reference_images`: a local `.safetensors`, or "
        "`org/name[@revision][:file.safetensors]` on the hub; unset: references are a 400",
    )
    host: str = Field(default="127.0.0.1", description="where `serve` listens (also `--host`)")
    port: int = Field(default=8000, ge=0, le=65535, description="the port `serve` listens on (also `--port`)")
    public_url: str | None = Field(
        default=None, description="the base of absolute URLs behind a proxy; unset: the request's own"
    )
    database_url: str | None = Field(
        default=None,
        description="a SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`; unset: SQLite in the "
        "data dir",
    )
    rate_limit_per_minute: int = Field(
        default=1200, ge=0, description="requests per account a minute (a token bucket); 0 turns it off"
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="requests an account may make at once")
    key_cache_s: float = Field(
        default=10.0,
        ge=0,
        description="seconds a server holds an API key it has read, so polling costs no key lookup; a key "
        "revoked with `openreel keys revoke` stops working on a running server within this time (0: read "
        "the key on every request)",
    )
    max_concurrent_jobs: int = Field(
        default=8, ge=1, description="queued plus running jobs per account; more is a 429 with `Retry-After`"
    )
    secret_key: str | None = Field(
        default=None, description="signs file links; unset: one generated into the data dir"
    )
    result_url_ttl_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="lifetime of a result link (a fresh one comes with every job read)",
    )
    upload_ttl_s: int = Field(
        default=2 * 3600, gt=0, description="lifetime of an upload; expired uploads are deleted"
    )
    max_upload_image_bytes: int = Field(
        default=25 * 1024 * 1024, gt=0, description="the largest image uploaded, sent inline or fetched"
    )
    max_upload_video_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="the largest video uploaded"
    )
    max_account_upload_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=0,
        description="the most bytes of unexpired uploads an account may hold: more through `/v2/uploads` is "
        "a 429 with `Retry-After` (the images a job stores count, but are not refused); 0 turns it off",
    )
    max_json_body_bytes: int | None = Field(
        default=None,
        ge=0,
        description="caps every request body that is not multipart; unset, a body may carry 1 MiB plus the "
        "base64 images its route takes inline (three of the image limit on Google's predict, 101 MiB by "
        "default; one on OpenAI's create; none elsewhere). A multipart body may carry the upload limit "
        "plus 1 MiB. More is a 413; without a valid API key no body is read at all ([limits](limits.md))",
    )
    allow_private_urls: bool = Field(
        default=False, description="let image and webhook URLs reach private addresses (development)"
    )
    metrics_public: bool = Field(
        default=False,
        description="serve `/metrics` to every client, not only to ones on this machine that no proxy "
        "forwarded ([scrape config](operations.md))",
    )
    fetch_timeout_s: float = Field(default=20.0, gt=0, description="seconds to fetch a request's image")
    fetch_max_redirects: int = Field(default=3, ge=0, description="redirects followed fetching an image")
    max_image_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="the most pixels an image may decode to, checked as it is uploaded or fetched (a larger "
        "one is a 400)",
    )
    webhook_attempts: int = Field(default=5, ge=1, description="webhook delivery tries (exponential backoff)")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="seconds a webhook try may take")
    executor: ExecutorName = Field(
        default="local",
        description="`local` (worker processes on this machine) or `ray` (a Ray cluster); also `--executor`",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="worker slots on this machine, one per GPU (each worker sees only its GPU); also "
        "`--workers`",
    )
    ray_address: str | None = Field(
        default=None,
        description="the Ray head (`host:port`) a `ray` server drives; unset: a private one-machine Ray "
        "cluster with `OPENREEL_WORKERS` slots",
    )
    lease_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="a running job is leased for this long and renewed every third of it while its worker "
        "answers; an expired lease is re-queued",
    )
    job_timeout_s: int = Field(
        default=3600,
        gt=0,
        description="per video of the job: a render running longer is killed and its job failed and refunded",
    )
    engine_load_timeout_s: int = Field(
        default=1800,
        gt=0,
        description="a worker (or Ray actor) that has not loaded its engine by then is stopped and its slot "
        "taken out of service (tried again later, as after a failed load); with every slot out, queued jobs "
        "fail and are refunded, as they do when a Ray cluster has offered no render slot for as long",
    )
    max_attempts: int = Field(
        default=2, ge=1, description="tries of a job whose worker died or whose server stopped mid-render"
    )
    precision: Literal["bf16", "fp8"] = Field(
        default="bf16",
        description="`fp8` stores the transformer blocks' attention and feed-forward weights in float8 "
        "(multiplied in float8 on Hopper, upcast elsewhere): about half the transformer",
    )
    offload: Literal["none", "model", "sequential"] = Field(
        default="none",
        description="`model` or `sequential`: weights wait in CPU memory and move to the GPU per model or "
        "per layer (needs CUDA; slower)",
    )
    compile: bool = Field(
        default=False,
        description="compile the transformer blocks with `torch.compile` (regionally, one graph for all of "
        "them and every clip shape; CUDA, or a C++ compiler on a CPU): on an H200, fast 720p·8 s 16.3 → "
        "12.3 s in bf16, 11.4 s in fp8. A worker compiles while it loads, before its first job (a first job "
        "that compiled took 36 s more on an H200; inductor's cache is kept across restarts in the data dir's "
        "`models/torch-compile`); the quality recipe's first job compiles its own; not with "
        "`offload=sequential`",
    )
    prompt_cache_size: int = Field(
        default=4,
        ge=0,
        description="prompts whose text-encoder output a worker keeps (in CPU memory, ~0.4 GB each on the "
        "real model); 0 turns it off",
    )
    x264_preset: X264Preset = Field(default="veryfast", description="libx264 preset of the MP4 writer")
    prices_file: Path | None = Field(
        default=None, description="JSON price overrides ([credits](api.md#credits))"
    )
    storage: StorageName = Field(
        default="local", description="`local` (files in the data dir, served by the API) or `s3`"
    )
    s3_bucket: str | None = Field(
        default=None,
        description="the S3 bucket (or any S3-compatible store's); results are handed out as presigned URLs "
        "(Range served by the store)",
    )
    s3_prefix: str = Field(default="", description="a key prefix inside the bucket")
    s3_endpoint_url: str | None = Field(default=None, description="the endpoint of an S3-compatible store")
    s3_region: str | None = Field(default=None, description="the bucket's region")
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 credentials, with the secret below (both or neither); unset: boto3's own chain "
        "(environment, profile, instance role: the way to temporary credentials)",
    )
    s3_secret_access_key: str | None = Field(
        default=None, description="the secret of `OPENREEL_S3_ACCESS_KEY_ID`"
    )

    @field_validator("checkpoint", "reference_adapter", "distilled_lora", "upsampler")
    @classmethod
    def _weights_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Empty means unset; anything else must parse, so a typo stops the service at start-up."""
        if not value:
            return None
        from openreel.engine.weights import Adapter, Checkpoint, Folder

        if info.field_name == "checkpoint":
            Checkpoint.parse(value)
        elif info.field_name == "upsampler":
            Folder.parse(value)
        else:
            Adapter.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Settings that only make sense together, refused at start-up rather than on first use."""
        if self.compile and self.offload == "sequential":
            raise ValueError(
                "OPENREEL_COMPILE cannot go with OPENREEL_OFFLOAD=sequential (layers moved one by one under "
                "the compiled blocks): use offload model or none"
            )
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage s3 needs a bucket: set OPENREEL_S3_BUCKET")
        if self.storage == "s3" and (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "S3 credentials come in pairs: set both OPENREEL_S3_ACCESS_KEY_ID and "
                "OPENREEL_S3_SECRET_ACCESS_KEY, or neither (boto3's own chain)"
            )
        return self

    def engine_options(self) -> EngineOptions:
        from openreel.engine import EngineOptions

        return EngineOptions(
            self.engine,
            self.checkpoint,
            precision=self.precision,
            offload=self.offload,
            prompt_cache_size=self.prompt_cache_size,
            compile=self.compile,
            reference_adapter=self.reference_adapter,
            distilled_lora=self.distilled_lora,
            upsampler=self.upsampler,
        )

    def configured_checkpoint(self) -> Checkpoint | None:
        """The checkpoint serving every model id: the tiny build in the data dir, or the configured one."""
        from openreel.engine import TINY_CHECKPOINT_DIR
        from openreel.engine.weights import Checkpoint

        if self.engine == "tiny":
            return Checkpoint(str((self.data_dir / "models" / TINY_CHECKPOINT_DIR).resolve()))
        return Checkpoint.parse(self.checkpoint) if self.checkpoint else None

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'openreel.db').resolve()}"

    @property
    def local_url(self) -> str:
        """Where this server answers from its own machine (a wildcard address is the loopback one)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def made_data_dir(self) -> Path:
        """The data directory, created readable by this user alone: it holds the ledger (whose key
        hashes also sign webhooks), the signing secret and every account's videos."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.data_dir

    def resolved_secret(self) -> bytes:
        """The signing secret; generated once and kept beside the data so links survive restarts."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.made_data_dir() / "secret.key"
        if not path.exists():
            write_private(path, secrets.token_hex(32))
        return path.read_text().strip().encode()


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path`` at once (through a temporary file), readable by this user alone from the
    moment the file exists (a temporary file left by an earlier try, whatever its mode, is replaced)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)
    tmp.replace(path)


def _shown(name: str, value: object) -> str:
    """A default as docs/configuration.md shows it."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and name.endswith("_bytes"):
        return f"{value // 2**20} MiB"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    return f"`{value}`"


def configuration_table() -> str:
    """docs/configuration.md's table, from the fields themselves (``python -m openreel.settings``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `OPENREEL_{name.upper()}` | {_shown(name, field.default)} | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(configuration_table(), end="")
