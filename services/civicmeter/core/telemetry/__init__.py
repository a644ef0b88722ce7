"""Telemetry: OpenTelemetry's set-up from OTEL_*, the Kafka spans, and the metrics the services
record (durations, latencies, consumer lag)."""
