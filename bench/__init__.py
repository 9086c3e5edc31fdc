"""Benchmarks: the daemon through the official SDKs against raw baselines, in one run."""
