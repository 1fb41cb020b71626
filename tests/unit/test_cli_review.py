"""Review of the command-line tools: atomic output files, interrupts and broken pipes, argument
checks made before any work, safe per-symbol folder names."""

from __future__ import annotations

import contextlib
import resource

import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv, write_truth_csv

LIMIT = 2048  # bytes: a file size limit (``ulimit -f``) hit in the middle of every file below


@contextlib.contextmanager
def file_size_limit(limit: int = LIMIT):
    """RLIMIT_FSIZE for the duration (Python ignores SIGXFSZ: a write past it raises EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def leftovers(folder, keep=()):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def synth():
    return generate("realistic", 300, 5, symbol="SYN")


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory, synth):
    path = tmp_path_factory.mktemp("bars") / "bars.csv"
    write_bars_csv(path, [synth.series])
    return path


# -- defect 1: output files are written atomically ------------------------------------------


def test_write_bars_csv_cut_short_leaves_the_old_file_and_no_temporary(tmp_path, synth):
    out = tmp_path / "bars.csv"
    out.write_text("old\n")
    with pytest.raises(OSError), file_size_limit():
        write_bars_csv(out, [synth.series])
    assert out.read_text() == "old\n"
    assert leftovers(tmp_path) == ["bars.csv"]


def test_write_truth_csv_cut_short_leaves_no_file(tmp_path, synth):
    out = tmp_path / "truth.csv"
    with pytest.raises(OSError), file_size_limit():
        write_truth_csv(out, synth)
    assert leftovers(tmp_path) == []


def test_data_export_cut_short_leaves_no_truncated_csv(tmp_path, capsys):
    out = tmp_path / "part.csv"
    with file_size_limit():
        code = main(["data", "export", "synth:realistic:1:400", "--out", str(out)])
    assert code == 1
    assert leftovers(tmp_path) == []


def test_features_compute_cut_short_leaves_no_half_file(tmp_path, bars_csv, capsys):
    with file_size_limit():
        code = main(["features", "compute", str(bars_csv), "--out", str(tmp_path)])
    assert code == 1
    assert leftovers(tmp_path) == []


def test_regime_label_cut_short_leaves_the_old_file(tmp_path, bars_csv, capsys):
    out = tmp_path / "labels.csv"
    out.write_text("old\n")
    with file_size_limit():
        code = main(["regime", "label", "--bars", str(bars_csv), "--out", str(out)])
    assert code == 1
    assert out.read_text() == "old\n"
    assert leftovers(tmp_path) == ["labels.csv"]


def test_write_report_cut_short_leaves_no_half_page(tmp_path, monkeypatch):
    from ensemble_trader.backtest import report

    monkeypatch.setattr(report, "render_html", lambda run, result, costs: "<p>x</p>\n" * 1000)
    monkeypatch.setattr(report, "as_json", lambda result: {})
    with pytest.raises(OSError), file_size_limit():
        report.write_report(None, {}, tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


# -- defect 2: Ctrl-C and a closed stdout ------------------------------------------------------


def test_ctrl_c_during_a_command_says_interrupted(monkeypatch, capsys):
    import ensemble_trader.marketdata as marketdata

    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(marketdata, "load_bars", interrupted)
    assert main(["data", "show", "synth:realistic:1:400"]) == 130
    assert capsys.readouterr().err == "ensemble-trader: interrupted\n"


def test_ctrl_c_while_the_parser_imports_the_commands_is_no_traceback(monkeypatch, capsys):
    import ensemble_trader.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["data", "show", "synth:realistic:1:400"]) == 130
    assert capsys.readouterr().err == "ensemble-trader: interrupted\n"


def test_a_closed_stdout_is_quiet_with_exit_141():
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ensemble_trader.cli import main; sys.exit(main())",
         "data", "show", "synth:realistic:1:400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first line, as `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert err == ""
