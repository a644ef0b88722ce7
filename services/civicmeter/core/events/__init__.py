"""Usage events as they travel: the metered quantities, validation, and the wire format of the
Kafka batches (protobuf written by hand where the stream's speed needs it)."""
