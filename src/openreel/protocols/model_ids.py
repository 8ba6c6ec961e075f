"""The model ids a request may name: the catalog's own, or Google's Veo ids mapped to their presets."""

from __future__ import annotations

import re

from openreel.domain.catalog import Catalog

# Google's Veo model ids (Gemini "-preview", Vertex "-001", Veo 2's "-exp") -> our catalog presets.
_GOOGLE_MODEL = re.compile(
    r"^veo-(?P<version>2\.0|3\.0|3\.1)(?:-(?P<tier>fast|lite))?-generate-(?:preview|exp|\d{3})$"
)
_GOOGLE_PRESETS = {
    ("3.1", None): "veo-3.1",
    ("3.1", "fast"): "veo-3.1-fast",
    ("3.1", "lite"): "veo-3.1-lite",
    ("3.0", None): "veo-3",
    ("3.0", "fast"): "veo-3-fast",
    ("2.0", None): "veo-2",
}
GOOGLE_MODEL_EXAMPLES = (
    "veo-3.1-fast-generate-preview, veo-3.1-generate-preview, veo-3.1-lite-generate-preview, "
    "veo-3.1-fast-generate-001, veo-3.1-generate-001, veo-3.0-generate-001, veo-3.0-fast-generate-001, "
    "veo-2.0-generate-001"
)


def catalog_model_id(catalog: Catalog, requested: str) -> str | None:
    """Our catalog id for a catalog id or a Google Veo model id; None if neither."""
    name = requested.removeprefix("models/")
    if catalog.get(name) is not None:
        return name
    match = _GOOGLE_MODEL.match(name)
    if match is None:
        return None
    preset = _GOOGLE_PRESETS.get((match["version"], match["tier"]))
    return preset if preset is not None and catalog.get(preset) is not None else None
