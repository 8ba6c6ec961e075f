"""The wire protocols: Apiframe v2 (``apiframe``), Google Veo (``google``) and OpenAI videos (``openai``).

Each one parses its requests into the same ``VideoSpec``, submits through ``service.job_service`` (so
charges, idempotency and the queue are shared) and renders the one job ledger in its own shapes, errors
included. Beside them, what more than one of them uses: ``shaped_routes`` (a surface's error shape on its
routes), ``model_ids``, ``job_ids``, ``inline_images`` and ``submission``.
"""
