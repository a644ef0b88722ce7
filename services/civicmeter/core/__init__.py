"""The shared core every service builds on: event model, pricing, config, storage, telemetry."""
