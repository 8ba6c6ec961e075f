"""What every protocol does with a request once it is parsed: jobs, uploads, views, webhooks, limits."""
