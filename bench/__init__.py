"""Benchmarks for the targets of DESIGN.md; run as `python -m bench.<name>`, never by pytest."""
