"""Benchmarks of kstream against plain confluent-kafka on a real broker (``python -m bench.<name>``)."""
