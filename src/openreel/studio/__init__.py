"""The Studio: a static page served at ``/studio`` that uses only the public API."""
