"""Performance goals of saekit, measured by `make bench` (never as timed assertions in tests)."""
