"""The limits every protocol applies to a video request, stated once (the SDK's wire schemas use them too)."""

MAX_PROMPT = 4000
MAX_NEGATIVE_PROMPT = 2000
MAX_REFERENCES = 3
MAX_SEED = 2**32 - 1
MAX_SAMPLES = 4  # videos per request (Vertex's sampleCount)
MAX_IDEMPOTENCY_KEY = 255
# Extension (Google's rules for Veo 3.1): each call adds about 7 s to a 720p clip of at most 141 s.
EXTEND_SECONDS = 7
MAX_EXTEND_SOURCE_S = 141
