"""query: the gRPC API finance systems use to read cost and usage."""
