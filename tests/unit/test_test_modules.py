"""The test folders have no ``__init__.py``, so pytest imports each test file by its basename:
two files of one name in different folders break the collection of the whole suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name():
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if not (p.parent / "__init__.py").exists())
    assert [name for name, n in names.items() if n > 1] == []
