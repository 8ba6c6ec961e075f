"""The Apiframe v2 surface: its wire schemas (shared with the SDK) and its routes."""
