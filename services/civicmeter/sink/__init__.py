"""sink: writes rated usage events from Kafka to ClickHouse, idempotently."""
