"""wg-pod benchmarks: ``./bench/run`` (see BENCHMARKS.md)."""
