"""Executors run renders away from the web server: a spawned worker process holds the engine, and
the dispatcher (a thread in the server) feeds it jobs and writes every outcome to the ledger."""
