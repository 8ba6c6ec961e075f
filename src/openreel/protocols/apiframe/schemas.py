"""Wire shapes of the Apiframe v2 API (``shared/contracts/apiframe-v2-openapi.json``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from openreel.domain.limits import (
    EXTEND_SECONDS,
    MAX_EXTEND_SOURCE_S,
    MAX_NEGATIVE_PROMPT,
    MAX_PROMPT,
    MAX_REFERENCES,
    MAX_SAMPLES,
)

WebhookEvent = Literal["progress", "completed", "failed"]


def _each_once(events: list[str]) -> list[str]:
    """A list that repeats an event is refused: stored and shown with the job, a list of 80,000 of them
    would cost every read of it."""
    if len(set(events)) != len(events):
        raise ValueError("names an event more than once")
    return events


WebhookEvents = Annotated[list[WebhookEvent], Field(min_length=1), AfterValidator(_each_once)]
JobStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
# The contract's JobAccepted has no CANCELLED: a replay of a cancelled job's request reads FAILED there,
# as its webhook event does (the job itself says CANCELLED).
AcceptedStatus = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _whole(value: object) -> object:
    """JSON has numbers, not integers: 4.0 is 4, to JSON Schema (the contract's) as to JavaScript."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer field, strict but for a whole number written with a fraction (no strings, booleans or 4.5).
Whole = Annotated[int, BeforeValidator(_whole)]


class VeoParams(Strict):
    duration: Whole | None = None
    aspect_ratio: Annotated[str, Field(pattern=r"^\d+:\d+$")] | None = None
    seed: Whole | None = None
    image: str | None = None
    resolution: Literal["720p", "1080p"] | None = None
    generate_audio: bool | None = None
    negative_prompt: Annotated[str, Field(max_length=MAX_NEGATIVE_PROMPT)] | None = None
    last_frame: str | None = None
    reference_images: Annotated[list[str], Field(max_length=MAX_REFERENCES)] | None = None
    enhance_prompt: bool | None = Field(
        default=None,
        description="openreel: rewrite the prompt with the model's own Gemma before rendering (default "
        "false); the result's enhancedPrompt is what was rendered.",
    )
    sample_count: Whole | None = Field(
        default=None,
        description=f"openreel: how many videos to render, 1 to {MAX_SAMPLES} (default 1), seeded seed, "
        "seed + 1, ...; each is charged, and each that fails is refunded. The result's videos lists them.",
    )
    extend_job_id: str | None = Field(
        default=None,
        description=f"openreel: continue the video of this completed job (720p, at most "
        f"{MAX_EXTEND_SOURCE_S} s) by {EXTEND_SECONDS} s instead of making a new clip; the result is the "
        "whole clip, joined. Priced per second added (the model's extend-1s prices). Not with duration, "
        "image, last_frame or reference_images.",
    )
    extend_video: Whole | None = Field(
        default=None, description="openreel: which of that job's result.videos to continue (default 0)."
    )


class GenerateVideoRequest(Strict):
    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT)]
    model: str
    veoParams: VeoParams | None = None
    webhookUrl: str | None = None
    webhookEvents: WebhookEvents | None = None


class JobAccepted(BaseModel):
    jobId: str
    status: AcceptedStatus


class StageTrace(BaseModel):
    width: int
    height: int
    frames: int
    sigmas: list[float]
    noiseScale: float
    guidance: list[Literal["cfg", "stg", "modality", "nag"]]
    passesPerStep: int = Field(description="Transformer batch rows per denoising step.")
    weights: Literal["dev", "distilled"]
    lora: bool = Field(description="Whether the distilled LoRA was fused into dev weights for this stage.")


class ConditionTrace(BaseModel):
    kind: Literal["image", "last_frame", "reference", "extend", "extend_audio"]
    stage: int
    width: int
    height: int
    pixelFrame: int | None
    frames: int | None = Field(
        default=None,
        description="How much the condition holds: pixel frames (an extension's lead: the clip's last 57), "
        "or for extend_audio the audio latent frames of the clip's sound (25 a second).",
    )


class RecipeTrace(BaseModel):
    """What the render did, recorded from the calls the engine made."""

    version: str = Field(description="The LTX-2 generation of the checkpoint.")
    precision: Literal["bf16", "fp8", "fp32"] = Field(description="Weight storage (fp32: a CPU engine).")
    stages: list[StageTrace]
    conditions: list[ConditionTrace]
    peakGpuBytes: int | None


class SampleVideo(BaseModel):
    """One video of a request's samples; a sample that failed has only its seed and error."""

    seed: int
    videoUrl: str | None = None
    width: int | None = None
    height: int | None = None
    durationSeconds: float | None = None
    fps: int | None = None
    hasAudio: bool | None = None
    error: str | None = None


class ExtendedFrom(BaseModel):
    jobId: str = Field(description="The job whose video this one continues.")
    video: int = Field(description="Which of that job's videos.")
    secondsAdded: int
    leadFrames: int = Field(description="The clip's last frames the new segment was conditioned on.")


class VideoResult(BaseModel):
    videoUrl: str
    width: int
    height: int
    durationSeconds: float
    fps: int
    hasAudio: bool
    seed: int
    notice: str | None = None
    recipe: RecipeTrace | None = None
    enhancedPrompt: str | None = Field(
        default=None, description="The prompt rendered, when the request asked for enhancement (openreel)."
    )
    videos: list[SampleVideo] = Field(
        default_factory=list,
        description="Every sample of the request (veoParams.sample_count), made or failed; the result's own "
        "video is the first one made (openreel).",
    )
    extendedFrom: ExtendedFrom | None = Field(
        default=None, description="The clip this video continues, for an extension (openreel)."
    )


class JobOut(BaseModel):
    id: str
    status: JobStatus
    model: str
    progress: int | None
    result: VideoResult | None
    error: str | None
    creditCost: int | None
    webhookStatus: Literal["pending", "delivered", "failed"] | None
    webhookError: str | None = Field(default=None, description="Why the last webhook try failed (openreel).")
    createdAt: str
    completedAt: str | None
    expired: bool
    input: dict[str, Any] | None
    queuePosition: int | None = None
    etaSeconds: float | None = None


class JobList(BaseModel):
    jobs: list[JobOut]
    nextCursor: str | None
    hasMore: bool
    models: list[str] | None = None


class ErrorBody(BaseModel):
    error: str
    details: dict[str, list[str]] | None = None


class InsufficientCreditsBody(BaseModel):
    error: Literal["Insufficient credits"]
    creditsRequired: int
    creditsAvailable: int


class MeUser(BaseModel):
    id: str
    email: str
    role: str


class MeTeam(BaseModel):
    id: str
    name: str
    plan: str
    credits: int
    customerId: str | None
    maxConcurrentJobs: int


class MeKey(BaseModel):
    id: str
    name: str
    prefix: str


class Me(BaseModel):
    user: MeUser
    team: MeTeam
    apiKey: MeKey


class UploadOut(BaseModel):
    id: str
    url: str
    kind: Literal["image", "video", "audio"]
    contentType: str
    byteSize: int
    expiresAt: str


class ReferenceAdapterInfo(BaseModel):
    adapter: str = Field(description="The IC-LoRA serving reference_images: a local file or hub repo id.")
    weightsPresent: bool = Field(description="Whether it is on this machine (`openreel models pull`).")


class StagePlan(BaseModel):
    size: Literal["half", "full"]
    sigmas: list[float]
    noiseScale: float
    weights: Literal["dev", "distilled"]
    guidance: list[Literal["cfg", "stg", "modality"]]
    passesPerStep: int
    negativePrompt: Literal["cfg", "nag"] | None = Field(
        description="How a negative prompt acts in this stage."
    )


class RecipePlan(BaseModel):
    kind: Literal["fast", "quality"]
    version: str
    imageCrf: int
    stages: list[StagePlan]


class EngineInfo(BaseModel):
    name: str
    backedBy: str
    randomWeights: bool
    checkpoint: str | None = Field(
        description="The open checkpoint: a local directory or hub repo id[@revision]."
    )
    weightsPresent: bool = Field(
        description="Whether its weights are on this machine (`openreel models pull`)."
    )
    ready: bool
    unavailable: str | None = Field(
        default=None, description="Why this id cannot run on the loaded checkpoint."
    )
    notice: str | None
    recipe: RecipePlan | None = Field(
        default=None, description="The stages this id runs on the loaded checkpoint's LTX-2 generation."
    )
    referenceAdapter: ReferenceAdapterInfo | None = Field(
        default=None, description="Set when this model takes reference_images and an adapter is configured."
    )


class ModelEntry(BaseModel):
    id: str
    label: str
    description: str
    modality: Literal["video"]
    costMin: int
    costMax: int
    pricingMode: Literal["flat"]
    durations: list[int]
    defaultDuration: int
    resolutions: list[str]
    aspectRatios: list[str]
    audio: bool
    acceptsGenerateAudio: bool
    acceptsReferenceImages: bool
    referenceImagesUnavailable: str | None = Field(
        default=None, description="Why this model cannot take reference_images on this server; null: it can."
    )
    maxSampleCount: int = Field(
        description="The most videos one request may ask for (veoParams.sample_count)."
    )
    promptEnhancementUnavailable: str | None = Field(
        default=None, description="Why this server cannot take veoParams.enhance_prompt; null: it can."
    )
    extends: bool = Field(description="Whether the model continues clips (veoParams.extend_job_id).")
    extendSeconds: int = Field(description="Seconds an extension adds, priced per second (extend-1s).")
    maxExtendSourceSeconds: int = Field(description="The longest clip an extension continues.")
    prices: dict[str, int]
    engine: EngineInfo


class ModelCatalog(BaseModel):
    models: list[ModelEntry]
