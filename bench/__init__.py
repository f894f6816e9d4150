"""Benchmark harness for mservices.

Starts a bare Tornado "floor" server and the mservices server as real processes on loopback,
drives them with ``wrk`` and reports requests/s, p99 latency and each scenario's throughput as a
ratio of the floor's. Run it as ``python -m bench`` (``--smoke`` for a quick run); see README.md.
"""
