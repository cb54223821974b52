"""The benchmarks, the soak, the crash test and the fuzzing run: ``python -m bench.<name>``."""
