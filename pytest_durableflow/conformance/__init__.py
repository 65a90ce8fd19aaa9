"""The checkpointer conformance suite: the tests every ``durableflow.Checkpointer`` must pass.

Subclass :class:`CheckpointerConformance` under a name starting with ``Test``
and give it a ``checkpointer`` fixture: a new, empty store for each test. A
store that outlives its Python object also gives ``reopen``: a function that
opens a *new* checkpointer object over the same store. With it the suite
checks that runs outlive the object and the process, and that ``append`` is
atomic when the process is SIGKILLed at any line of the store's own module::

    import pytest
    from pytest_durableflow.conformance import CheckpointerConformance
    from mystore import PostgresCheckpointer

    class TestPostgresCheckpointer(CheckpointerConformance):
        @pytest.fixture
        def checkpointer(self, empty_database):  # a fresh, empty store per test
            return PostgresCheckpointer(empty_database.dsn)

        @pytest.fixture
        def reopen(self, empty_database):  # new objects over that same store
            return lambda: PostgresCheckpointer(empty_database.dsn)

A store kept in the test process's memory sets ``survives_process = False``,
and the kill test is reported as skipped with that reason. Every test runs on
a manual clock installed with ``durableflow.use_clock`` (the ``clock``
fixture), so a store must read the time from ``durableflow.get_clock()``, as
leases are checked against it. The kill test needs ``os.fork`` (POSIX).
"""

from __future__ import annotations

from ._fencing import FencingTests
from ._kill import KillTests
from ._leases import LeaseTests
from ._listing import ListingTests
from ._metadata import MetadataTests
from ._records import RecordTests

__all__ = ["CheckpointerConformance"]


class CheckpointerConformance(RecordTests, MetadataTests, ListingTests, LeaseTests, FencingTests, KillTests):
    """Tests of the ``Checkpointer`` protocol; subclass it and provide the ``checkpointer`` fixture."""
