"""Tests of the benchmark harness's pure helpers and its load client."""
