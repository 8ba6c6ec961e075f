"""Google Veo: the Gemini API and Vertex AI forms of ``predictLongRunning`` and their operations."""
