"""The demo's environment default: set only when absent, restored afterwards."""

from __future__ import annotations

import os

from ensemble_trader.cli.demo import env_default

NAME = "ET_TEST_DEMO_DEFAULT"


def test_env_default_sets_a_missing_variable_and_removes_it_afterwards(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    with env_default(NAME, "0.5") as value:
        assert value == "0.5" and os.environ[NAME] == "0.5"
    assert NAME not in os.environ


def test_env_default_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv(NAME, "0.25")
    with env_default(NAME, "0.5") as value:
        assert value == "0.25"
    assert os.environ[NAME] == "0.25"
