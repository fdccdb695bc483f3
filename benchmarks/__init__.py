"""Benchmarks of trio-sctls against TLS over TCP; run them all with ``scripts/bench``."""
