"""What bench/, tests/ and docs/screenshot.py share, so that none imports another.

``harness.processes`` builds a server's environment, runs the Procfile's
release step and its web process on a free port, and stops them;
``harness.databases`` makes a fresh database on a server, or a throwaway
PostgreSQL cluster of our own; ``harness.browser`` starts Debian's headless
Chromium. None of them imports Django: the benchmarks run without its settings.
"""
