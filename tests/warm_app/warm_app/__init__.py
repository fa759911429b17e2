"""PID- and state-reporting echo apps (tests/test_warm_runtime.py)."""
