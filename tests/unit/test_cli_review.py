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


# -- defects 3, 4, 7: arguments checked before any work, usage errors naming the flag -----------


def no_work(*args, **kwargs):
    raise AssertionError("the work started before the arguments were checked")


@pytest.mark.parametrize(
    ("module", "argv", "flag"),
    [
        ("training.agents.evaluate", ["--cost-bps", "-3"], "--cost-bps"),
        ("training.agents.evaluate", ["--models", "/nonexistent/models"], "--models"),
        ("training.agents.evaluate", ["--img-dir", "/etc/passwd"], "--img-dir"),
        ("training.meta.select", ["--models", "/nonexistent/models"], "--models"),
        ("training.meta.select", ["--regime-model", "/nonexistent/regime"], "--regime-model"),
        ("training.meta.select", ["--candidates", '{"bogus": 1}'], "--candidates"),
        ("training.meta.select", ["--split", "test", "--img-dir", "/etc/passwd"], "--img-dir"),
        ("training.meta.bounds", ["--img-dir", "/etc/passwd"], "--img-dir"),
    ],
)
def test_training_entry_points_refuse_bad_arguments_before_any_work(module, argv, flag, monkeypatch, capsys):
    import importlib

    mod = importlib.import_module(module)
    for name in ("run_suite", "evaluate_candidates", "run"):
        if hasattr(mod, name):
            monkeypatch.setattr(mod, name, no_work)
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def test_training_entry_points_report_errors_and_ctrl_c_in_one_line(monkeypatch, capsys):
    from ensemble_trader.domain.errors import DataError

    import training.agents.evaluate as ev
    import training.meta.bounds as bounds

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def failing(*args, **kwargs):
        raise DataError("no such data")

    monkeypatch.setattr(ev, "run_suite", interrupted)
    assert ev.main([]) == 130
    assert capsys.readouterr().err == "python -m training.agents.evaluate: interrupted\n"
    monkeypatch.setattr(bounds, "run", failing)
    assert bounds.main([]) == 1
    assert capsys.readouterr().err == "python -m training.meta.bounds: error: no such data\n"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["regime", "fit", "--bars", "synth:realistic:1:400", "--out", "/etc/passwd"], "--out"),
        (["regime", "evaluate", "--out", "/etc/passwd"], "--out"),
        (["regime", "label", "--bars", "synth:realistic:1:400", "--out", "/proc/labels.csv"], "--out"),
        (["evaluate", "agents", "--bars", "synth:realistic:1:400", "--plot", "/proc/x.png"], "--plot"),
        (["features", "compute", "synth:realistic:1:400", "--out", "/etc/passwd"], "--out"),
        (["data", "export", "synth:realistic:1:400", "--out", "/proc/x.csv"], "--out"),
        (["backtest", "--bars", "synth:realistic:1:400", "--seed", "-1"], "--seed"),
        (["backtest", "--bars", "synth:realistic:1:400", "--seed", str(2**40)], "--seed"),
        (["backtest", "--bars", "synth:realistic:1:400", "--cost-bps", "-3"], "--cost-bps"),
        (["evaluate", "agents", "--bars", "synth:realistic:1:400", "--slippage-bps", "nan"], "--slippage-bps"),
        (["evaluate", "agents", "--bars", "synth:realistic:1:400", "--regime-model", "/nonexistent"],
         "--regime-model"),
    ],
)
def test_bad_outputs_and_values_are_usage_errors_before_any_work(argv, flag, monkeypatch, capsys):
    import ensemble_trader.marketdata as marketdata

    monkeypatch.setattr(marketdata, "load_bars", no_work)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


# -- defect 5: backtest --out folders per symbol ------------------------------------------------


def test_symbol_folder_names_stay_inside_the_output_folder():
    from ensemble_trader.cli import symbol_file_stem

    assert symbol_file_stem("BTC/USD") == "BTC_USD"
    assert symbol_file_stem("B/../../ESC") == "B_.._.._ESC"
    assert symbol_file_stem("^GSPC") == "GSPC"
    assert symbol_file_stem("..") == "_.."


def test_backtest_refuses_two_symbols_sharing_a_report_folder(tmp_path, synth, monkeypatch, capsys):
    import ensemble_trader.backtest.ensemble as ensemble

    bars = tmp_path / "two.csv"
    write_bars_csv(bars, [_renamed(synth.series, "BTC/USD"), _renamed(synth.series, "BTC_USD")])
    monkeypatch.setattr(ensemble, "run_pipeline", no_work)
    assert main(["backtest", "--bars", str(bars), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "BTC/USD and BTC_USD" in err
    assert not (tmp_path / "out").exists()


def _renamed(series, symbol):
    import dataclasses

    return dataclasses.replace(series, symbol=symbol)


# -- defect 6: evaluate agents --regime-model on synth: data ------------------------------------


def test_evaluate_agents_uses_a_named_regime_model_on_synthetic_data(capsys):
    from ensemble_trader.runtime.settings import Settings

    model = Settings().models_dir / "regime"
    assert main(["evaluate", "agents", "--bars", "synth:realistic:1:400", "--regime-model", str(model)]) == 0
    assert "regimes: detected" in capsys.readouterr().out


def test_evaluate_agents_refuses_truth_with_a_regime_model(tmp_path, synth, capsys):
    from ensemble_trader.runtime.settings import Settings

    truth = tmp_path / "truth.csv"
    write_truth_csv(truth, synth)
    code = main(["evaluate", "agents", "--bars", "synth:realistic:1:400", "--truth", str(truth),
                 "--regime-model", str(Settings().models_dir / "regime")])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_save_figure_replaces_an_image_whole(tmp_path):
    """Images were saved straight to their path (every plot of the CLI and the training tools): a
    size limit or Ctrl-C left half a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ensemble_trader.marketdata import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "img" / "line.png"
    save_figure(fig, path, dpi=50)
    whole = path.read_bytes()
    assert whole.startswith(b"\x89PNG") and leftovers(path.parent) == ["line.png"]
    with file_size_limit(len(whole) // 2), pytest.raises(OSError):
        save_figure(fig, path, dpi=100)  # a larger image, cut short
    plt.close(fig)
    assert path.read_bytes() == whole and leftovers(path.parent) == ["line.png"]
