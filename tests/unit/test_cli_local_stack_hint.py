"""A command that cannot connect while the shell holds a local stack's endpoint (before `local up`,
or after `local down` in a shell that kept the exports) says to check the stack. Before, the
error ended at botocore's or redis' "Could not connect" / "Connection refused"."""

from __future__ import annotations

import socket

import pytest
from ensemble_trader.cli import main

HINT = " (nothing answers there: is the local stack up? `ensemble-trader local status`)"


@pytest.fixture
def dead_port() -> int:
    """A port where connections are refused; the settings are read afresh around the test (the
    CLI's are read once per process, and another test's would point elsewhere)."""
    from ensemble_trader.runtime.settings import get_settings

    get_settings.cache_clear()
    with socket.socket() as s:  # bound, never listening: connections to it are refused
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
    get_settings.cache_clear()


def test_a_refused_aws_connection_under_a_local_endpoint_says_to_check_the_stack(monkeypatch, capsys, dead_port):
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")  # the dummy keys local up exports
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    assert main(["orders", "status"]) == 1
    err = capsys.readouterr().err
    assert "Could not connect to the endpoint URL" in err and err.rstrip("\n").endswith(HINT)


def test_a_refused_redis_connection_says_so_too(monkeypatch, capsys, dead_port):
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("ET_REDIS_URL", f"redis://127.0.0.1:{dead_port}/0")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert main(["cache", "count"]) == 1
    err = capsys.readouterr().err
    assert "Connection refused" in err and err.rstrip("\n").endswith(HINT)


def test_other_errors_and_real_aws_get_no_hint(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert main(["data", "show", str(tmp_path / "missing.csv")]) == 1  # not a connection
    assert HINT not in capsys.readouterr().err
    monkeypatch.delenv("ET_AWS_ENDPOINT_URL")
    from ensemble_trader.cli import _local_stack_hint

    assert _local_stack_hint(ConnectionRefusedError("Connection refused")) == ""
