"""Benchmarks: Choreo against raw nats-py and FastStream, on the same NATS and machine (`make bench`)."""
