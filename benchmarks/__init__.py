"""Side-by-side speed measurements: run with ``make bench`` or ``python -m benchmarks.<name>``."""
