"""HTTP surfaces. Routes are thin: they parse, authorise and call the ledger and storage."""
