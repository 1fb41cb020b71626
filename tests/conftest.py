"""Fixtures shared by every test folder.

``local_stack`` (session scope) is one :class:`~ensemble_trader.local.stack.LocalStack` for the
whole run: a moto server and a real redis-server on free ports with every resource of
``constants.py`` created, and the ``ET_*`` / ``AWS_*`` environment pointing at them (restored at
the end). Starting it takes ~2-3 s, so tests share it; to keep them independent use the
``clean_stack`` fixture (tests/integration/conftest.py), which empties Redis, the queues and the
tables, forgets loaded handlers and stage statistics, and hands out stream marks and emulators
that only see records put after the test began (streams cannot be emptied).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def local_stack():
    from ensemble_trader.local.stack import LocalStack

    stack = LocalStack().start()
    try:
        yield stack
    finally:
        stack.stop()
