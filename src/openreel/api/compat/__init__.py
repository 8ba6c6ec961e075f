"""Compatibility wire protocols: Google Veo (Gemini and Vertex forms) and OpenAI's videos API.

Each surface parses its own request into the same ``VideoSpec`` the Apiframe surface uses, submits
through ``openreel.api.job_service.submit_job`` (so charges, idempotency and the queue are shared), and
renders the one job ledger in its own shapes, errors included:

- ``common``: model ids, job ids, inline images, cancel/delete, and the route class that turns
  request validation errors and ``WireError`` into the surface's own error body.
- ``google_wire``: the Veo ``predictLongRunning`` request, Google's rules, operations, errors.
- ``openai_wire``: the ``/v1/videos`` create parameters, the video object, list pages, errors.
"""
