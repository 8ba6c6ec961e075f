"""openreel: a self-hosted video generation service that speaks the Apiframe v2 (Veo) protocol.

``openreel.Client`` and ``openreel.AsyncClient`` are the Python SDK (see ``openreel.sdk``).
"""

__version__ = "0.1.0"

from openreel.sdk import AsyncClient, Client, verify_webhook

__all__ = ["AsyncClient", "Client", "__version__", "verify_webhook"]
