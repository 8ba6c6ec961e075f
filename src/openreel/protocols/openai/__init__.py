"""OpenAI's videos API (``/v1/videos``)."""
