"""``GET /v2/models``: the catalog, with the open model behind each id and whether it can run now."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from openreel.domain.catalog import ModelSpec
from openreel.domain.limits import EXTEND_SECONDS, MAX_EXTEND_SOURCE_S, MAX_SAMPLES
from openreel.engine import recipes
from openreel.engine.weights import Adapter, Checkpoint, locate, locate_adapter
from openreel.executors.base import EngineState
from openreel.protocols.apiframe.schemas import ErrorBody, ModelCatalog
from openreel.protocols.deps import ServicesDep
from openreel.service.services import Services
from openreel.service.views import RANDOM_WEIGHTS_NOTICE

router = APIRouter(tags=["Models"])


def _references_unavailable(model: ModelSpec, engine: EngineState) -> str | None:
    """Why ``model`` refuses reference_images here, as a person reads it; None: it takes them."""
    if not model.accepts_reference_images:
        return f"{model.label} does not take reference images."
    if not engine.reference_images:
        return (
            "Reference images need a reference (IC-LoRA) adapter, which this server does not have "
            "configured (OPENREEL_REFERENCE_ADAPTER)."
        )
    if engine.reference_error:
        return f"Reference images are off on this server: {engine.reference_error}"
    return None


def _entry(
    svc: Services,
    model: ModelSpec,
    checkpoint: Checkpoint | None,
    present: bool,
    adapter: dict[str, Any] | None,
) -> dict[str, Any]:
    engine = svc.dispatcher.engine
    notice = engine.error or (RANDOM_WEIGHTS_NOTICE if engine.random_weights else None)
    unavailable = engine.recipe_errors.get(model.recipe)
    version = engine.version if engine.version in recipes.VERSIONS else None
    references_unavailable = _references_unavailable(model, engine)
    return {
        "id": model.id,
        "label": model.label,
        "description": model.description,
        "modality": "video",
        "costMin": min(model.clip_prices.values()),
        "costMax": max(model.clip_prices.values()),
        "pricingMode": "flat",
        "durations": list(model.durations),
        "defaultDuration": model.default_duration,
        "resolutions": list(model.resolutions),
        "aspectRatios": list(model.aspect_ratios),
        "audio": model.audio,
        "acceptsGenerateAudio": model.accepts_audio_flag,
        "acceptsReferenceImages": references_unavailable is None,
        "referenceImagesUnavailable": references_unavailable,
        "maxSampleCount": MAX_SAMPLES,
        "extends": model.extends,
        "extendSeconds": EXTEND_SECONDS,
        "maxExtendSourceSeconds": MAX_EXTEND_SOURCE_S,
        "promptEnhancementUnavailable": (
            f"Prompt enhancement is off on this server: {engine.enhance_error}"
            if engine.enhance_error
            else None
        ),
        "prices": model.prices,
        "engine": {
            "name": engine.name,
            "backedBy": model.backed_by + (" (tiny random-weight build)" if engine.random_weights else ""),
            "randomWeights": engine.random_weights,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "weightsPresent": present,
            "ready": engine.ready and unavailable is None,
            "unavailable": unavailable,
            "notice": notice,
            # The stages this id runs on the loaded checkpoint's generation (known once a worker loaded).
            "recipe": (
                recipes.recipe(model.recipe, version, engine.transformer_blocks).describe()
                if version
                else None
            ),
            "referenceAdapter": adapter if model.accepts_reference_images else None,
        },
    }


@router.get("/v2/models", response_model=ModelCatalog, responses={400: {"model": ErrorBody}})
def list_models(
    svc: ServicesDep, modality: Literal["image", "video", "music"] | None = None
) -> dict[str, Any]:
    if modality not in (None, "video"):
        return {"models": []}
    entries = []
    configured = svc.settings.reference_adapter
    adapter = None
    if configured:
        found = locate_adapter(Adapter.parse(configured)) is not None
        adapter = {"adapter": configured, "weightsPresent": found}
    checkpoint = svc.settings.configured_checkpoint()
    present = checkpoint is not None and locate(checkpoint) is not None
    for model in svc.catalog.models.values():
        entries.append(_entry(svc, model, checkpoint, present, adapter))
    return {"models": entries}
