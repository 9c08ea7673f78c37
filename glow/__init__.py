"""Glow: LLM benchmarks on Prefect. See README.md."""

__version__ = "0.1.0"
