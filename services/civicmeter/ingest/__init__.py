"""ingest: accepts usage events over HTTP and gRPC and publishes them to usage.raw."""
