"""The wire protocols: Apiframe v2 (``apiframe``), Google Veo (``google``) and OpenAI videos (``openai``).

Each one parses its requests into the same ``VideoSpec``, submits through ``service.job_service`` (so
charges, idempotency and the queue are shared) and renders the one job ledger in its own shapes, errors
included. ``common`` holds what they share beyond that (most of it, only Google and OpenAI).
"""
