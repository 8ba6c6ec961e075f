"""The one typed settings object. Every field reads ``OPENREEL_<FIELD>`` from the environment."""

from __future__ import annotations

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

    data_dir: Path = Field(default=Path("openreel-data"), description="Database, uploads and results.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset.")
    engine: EngineName = Field(
        default="tiny", description="tiny (random weights, CPU) or ltx2 (real checkpoint)."
    )
    checkpoint: str | None = Field(default=None, description="ltx2 engine: HF repo id or local directory.")
    distilled_lora: str | None = Field(
        default=None,
        description="ltx2: the distilled LoRA, if not beside the checkpoint: file or org/name[@rev]:file.",
    )
    upsampler: str | None = Field(
        default=None,
        description="ltx2: the x2 latent upsampler, if not in latent_upsampler/: folder or org/name[:sub].",
    )
    reference_adapter: str | None = Field(
        default=None,
        description="IC-LoRA for reference_images: .safetensors path or org/name[@rev][:file]; off if unset.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(default=None, description="Base of absolute URLs; the request's if unset.")
    secret_key: str | None = Field(default=None, description="Signs file URLs; kept in data_dir if unset.")
    result_url_ttl_s: int = Field(default=24 * 3600, gt=0)
    upload_ttl_s: int = Field(default=2 * 3600, gt=0)
    max_upload_image_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_upload_video_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_json_body_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Cap on JSON bodies; unset: room for the inline base64 images a route takes (3 at most).",
    )
    fetch_timeout_s: float = Field(default=20.0, gt=0)
    fetch_max_redirects: int = Field(default=3, ge=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    allow_private_urls: bool = Field(default=False, description="Let image/webhook URLs reach private hosts.")
    metrics_public: bool = Field(
        default=False, description="Serve /metrics to every client; by default only to direct loopback ones."
    )
    executor: ExecutorName = Field(
        default="local", description="local (worker processes) or ray (a Ray cluster)."
    )
    workers: int = Field(default=1, ge=1, description="Worker slots on this machine: one per GPU.")
    ray_address: str | None = Field(default=None, description="Ray cluster to drive; a private one if unset.")
    lease_ttl_s: float = Field(default=30.0, gt=0, description="Retry a running job silent this long.")
    job_timeout_s: int = Field(default=3600, gt=0)
    max_attempts: int = Field(default=2, ge=1)
    max_concurrent_jobs: int = Field(
        default=8, ge=1, description="Active (queued or running) jobs per account."
    )
    rate_limit_per_minute: int = Field(
        default=1200, ge=0, description="Requests per account per minute; 0: off."
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Requests an account may make at once.")
    key_cache_s: float = Field(
        default=10.0,
        ge=0,
        description="Hold API keys in memory this long: a key revoked elsewhere works here until then.",
    )
    prices_file: Path | None = None
    storage: StorageName = Field(default="local", description="local (files in data_dir) or s3.")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = Field(default=None, description="For S3-compatible servers.")
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    precision: Literal["bf16", "fp8"] = Field(
        default="bf16", description="fp8: float8 weights, half the memory."
    )
    offload: Literal["none", "model", "sequential"] = Field(
        default="none", description="Weights wait in CPU RAM."
    )
    prompt_cache_size: int = Field(
        default=4, ge=0, description="Prompts whose text encodings a worker keeps."
    )
    x264_preset: X264Preset = "veryfast"
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_attempts: int = Field(default=5, ge=1)

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
    def _storage_complete(self) -> Settings:
        """Settings that only make sense together, refused at start-up rather than on first use."""
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage s3 needs a bucket: set OPENREEL_S3_BUCKET")
        if self.ray_address and self.executor != "ray":
            raise ValueError("a Ray address is for the ray executor: set OPENREEL_EXECUTOR=ray, or unset it")
        return self

    def engine_options(self) -> EngineOptions:
        from openreel.engine import EngineOptions

        return EngineOptions(
            self.engine,
            self.checkpoint,
            self.precision,
            self.offload,
            self.prompt_cache_size,
            self.reference_adapter,
            self.distilled_lora,
            self.upsampler,
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

    def resolved_secret(self) -> bytes:
        """The signing secret; generated once and kept beside the data so links survive restarts."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()
