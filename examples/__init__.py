"""Runnable durableflow examples, each with a test beside it that crash-tests it with pytest_durableflow.

Run one with ``python -m examples.<name>`` from the repository root; test them all with ``pytest examples``.
"""
