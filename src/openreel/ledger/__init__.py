"""The job ledger: accounts, API keys, credits and jobs in the application database."""
