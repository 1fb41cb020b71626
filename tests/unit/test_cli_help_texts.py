"""The help of the commands a new user meets first says what they do: `bench --only` names the
modules it takes (it said "these benchmark modules" and no names), `local up` how to use its
output, `local down` what it leaves in the shell, `orders reconcile` what it does."""

from __future__ import annotations

import pkgutil

import pytest
from ensemble_trader.cli import main
from ensemble_trader.cli.bench import benchmark_names


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_bench_only_lists_the_modules_run_all_knows(capsys):
    import ensemble_trader.bench as bench

    assert benchmark_names() == sorted(m.name for m in pkgutil.iter_modules(bench.__path__))
    assert f"run only these benchmark modules: {', '.join(benchmark_names())}" in _help(capsys, "bench")


@pytest.mark.parametrize("argv, words", [
    (("local", "up"), 'run it as eval "$(ensemble-trader local up)"'),
    (("local", "down"), "unset ET_AWS_ENDPOINT_URL and ET_REDIS_URL"),
    (("local", "status"), "print one JSON object"),
    (("orders", "reconcile"), "book the fills found"),
    (("orders", "kill-switch"), "on: reject every new order and cancel working ones"),
])
def test_each_command_says_what_it_does(capsys, argv, words):
    assert words in _help(capsys, *argv)


@pytest.mark.parametrize("argv, usage, unknown", [
    (["data", "synth", "--scenaro", "x", "--out", "o"], "usage: ensemble-trader data synth ", "--scenaro x"),
    (["orders", "kill-switch", "on", "--reason", "r", "--nope"], "usage: ensemble-trader orders kill-switch ", "--nope"),
    (["--bogus"], "usage: ensemble-trader [-h]", "--bogus"),
])
def test_a_misspelt_option_is_named_with_its_sub_commands_usage(capsys, argv, usage, unknown):
    """It was the top-level usage ("ensemble-trader [-h] [--version] [-v] COMMAND ...") for any."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and f"error: unrecognized arguments: {unknown}\n" in err


def test_module_docstrings_read_as_plain_text_in_help(capsys):
    """`backtest --help` and the research modules' help showed Sphinx markup (``report.html``,
    :func:`~ensemble_trader.backtest.ensemble.run_meta`)."""
    from ensemble_trader.cli import plain_help

    assert plain_help("writes ``report.html``; :func:`~a.b.run_meta` and :class:`a.B`") == (
        "writes report.html; run_meta and a.B")
    text = _help(capsys, "backtest")
    assert "``" not in text and "optionally writes report.html with plots" in text
