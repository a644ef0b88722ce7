"""Load generation, benchmarks and the demo scenario."""
