"""Benchmarks: ``./dev bench`` (``python -m bench``). Not part of CI's pass/fail."""
