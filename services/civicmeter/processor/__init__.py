"""processor: validates, prices and aggregates usage events (faust-streaming)."""
