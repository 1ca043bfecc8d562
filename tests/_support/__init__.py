"""Helpers shared by the test folders (CLI subprocesses, receivers)."""
