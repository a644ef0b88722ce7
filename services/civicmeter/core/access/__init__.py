"""Who may call the services and how often: API keys and their principals, and rate limits
(shared by ingest and query, which both take bearer tokens)."""
