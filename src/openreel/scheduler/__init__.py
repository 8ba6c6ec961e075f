"""Hands queued jobs to the executors and records what comes back (claims, leases, outcomes)."""
