"""Pure parts of the CDK app: handler discovery, stage configuration, missing layers."""

from __future__ import annotations

from pathlib import Path

import pytest
from ensemble_trader.constants import function_spec

from infra_cdk.config import STAGES, UnknownStageError, stage_config
from infra_cdk.constructs.functions import (
    ACCESS,
    LayersNotBuiltError,
    discover_entries,
    env_number,
    function_name,
)

HANDLER = "def lambda_handler(event, context):\n    return event\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_discovery_deploys_only_existing_handlers(tmp_path):
    assert discover_entries(tmp_path) == []
    _write(tmp_path / "features" / "handler.py", HANDLER)
    _write(tmp_path / "regime" / "handler.py", "def not_a_handler():\n    pass\n")  # no lambda_handler
    assert [e.key for e in discover_entries(tmp_path)] == ["features"]


def test_extra_entries_from_their_own_module_or_from_handler_functions(tmp_path):
    _write(tmp_path / "regime" / "handler.py", HANDLER)
    _write(tmp_path / "regime" / "refit.py", HANDLER)
    _write(
        tmp_path / "orders" / "handler.py",
        HANDLER + "\n\ndef kill_switch_handler(event, context):\n    return 1\n",
    )
    entries = {e.key: e.handler for e in discover_entries(tmp_path)}
    assert entries == {
        "regime": "handler.lambda_handler",
        "regime.refit": "refit.lambda_handler",
        "orders": "handler.lambda_handler",
        "orders.kill_switch": "handler.kill_switch_handler",
    }  # orders.reconcile has no code: not deployed


def test_every_possible_entry_has_declared_access():
    for logical in ("features", "regime", "meta_agent", "orders"):
        spec = function_spec(logical)
        assert logical in ACCESS
        for extra in spec.extra_entries:
            assert f"{logical}.{extra}" in ACCESS


def test_function_names_are_stage_qualified_and_dns_friendly():
    assert function_name("prod", "orders.kill_switch") == "et-prod-orders-kill-switch"
    assert function_name("dev", "meta_agent") == "et-dev-meta-agent"


def test_stage_configuration():
    assert set(STAGES) == {"dev", "staging", "prod"}
    assert stage_config("prod").retain_data and not stage_config("dev").retain_data
    with pytest.raises(UnknownStageError, match="'qa'.*dev"):
        stage_config("qa")


def test_synth_without_built_layers_names_the_fix(tmp_path):
    from infra_cdk.app import build_app

    _write(tmp_path / "functions" / "features" / "handler.py", HANDLER)
    with pytest.raises(LayersNotBuiltError, match="make layers"):
        build_app(
            outdir=str(tmp_path / "out"), functions_dir=tmp_path / "functions", layers_dir=tmp_path / "none"
        )


def test_the_app_writes_to_cdk_outdir_or_cdk_out(tmp_path, monkeypatch):
    from infra_cdk.app import build_app

    monkeypatch.setenv("CDK_OUTDIR", str(tmp_path / "from-env"))
    app, _ = build_app(functions_dir=tmp_path / "no-functions")
    assert app.outdir == str(tmp_path / "from-env")
    monkeypatch.delenv("CDK_OUTDIR")
    monkeypatch.chdir(tmp_path)
    app, _ = build_app(functions_dir=tmp_path / "no-functions")
    assert app.outdir.endswith("cdk.out")


def test_invalid_broker_context_is_refused(tmp_path):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match="broker='ib'"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"broker": "ib"})


def test_live_trading_needs_an_intent_age(tmp_path):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match="alpaca-live.*max_intent_age_seconds"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"broker": "alpaca-live"})


@pytest.mark.parametrize(("broker", "paper"), [("alpaca", "true"), ("alpaca-live", "false"), ("paper", None)])
def test_the_broker_context_sets_the_alpaca_endpoint(tmp_path, broker, paper):
    """``alpaca`` trades on Alpaca's paper endpoint, ``alpaca-live`` with real money: the orders
    functions get ``ET_ORDERS_ALPACA_PAPER`` accordingly (the paper broker needs none)."""
    from infra_cdk.app import build_app

    functions = tmp_path / "functions"
    (functions / "orders").mkdir(parents=True)
    (functions / "orders" / "handler.py").write_text("def lambda_handler(event, context):\n    return event\n")
    app, stack = build_app(outdir=str(tmp_path / "out"), functions_dir=functions,
                           context={"broker": broker, "max_intent_age_seconds": "900", "initial_equity": "25000"})
    template = app.synth().get_stack_by_name(stack.stack_name).template
    variables = [r["Properties"]["Environment"]["Variables"] for r in template["Resources"].values()
                 if r["Type"] == "AWS::Lambda::Function" and "ET_ORDERS_BROKER" in
                 r["Properties"].get("Environment", {}).get("Variables", {})]
    assert variables
    assert {v["ET_ORDERS_BROKER"] for v in variables} == {"paper" if broker == "paper" else "alpaca"}
    assert {v.get("ET_ORDERS_ALPACA_PAPER") for v in variables} == {paper}


def _orders_environments(tmp_path: Path, context: dict, stage: str = "dev") -> dict[str, dict]:
    """Synthesise the three orders entries (handler, reconcile, kill_switch) with ``context`` in
    ``stage``: each entry's function name → its environment variables."""
    from infra_cdk.app import build_app

    functions = tmp_path / "functions"
    source = HANDLER + "".join(f"\n\ndef {extra}(event, context):\n    return event\n"
                               for extra in function_spec("orders").extra_entries)
    _write(functions / "orders" / "handler.py", source)
    app, stack = build_app(outdir=str(tmp_path / "out"), functions_dir=functions,
                           context={"stage": stage, **context})
    template = app.synth().get_stack_by_name(stack.stack_name).template
    found = {r["Properties"]["FunctionName"]: r["Properties"]["Environment"]["Variables"]
             for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
             and "ET_ORDERS_BROKER" in r["Properties"].get("Environment", {}).get("Variables", {})}
    assert set(found) == {function_name(stage, key) for key in ("orders", "orders.reconcile", "orders.kill_switch")}
    return found


@pytest.mark.parametrize("stage", ["staging", "prod"])
@pytest.mark.parametrize("context", [{}, {"broker": ""}, {"initial_equity": "25000"}],
                         ids=["no-broker", "empty-broker", "equity-without-broker"])
def test_staging_and_prod_refuse_to_synthesise_without_an_explicit_broker(tmp_path, stage, context):
    """The broker lives only in each deploy's context: with a paper default, `make deploy STAGE=prod`
    (CI, the runbook's redeploys) switched a stage trading Alpaca to the paper broker."""
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError) as refused:
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"stage": stage, "symbols": "SPY", **context})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"context broker is required for stage '{stage}': give -c broker=paper|alpaca|")
    assert f"{stage.upper()}_CDK_CONTEXT" in message and "paper broker" in message


@pytest.mark.parametrize("stage", ["staging", "prod"])
def test_staging_and_prod_accept_paper_when_it_is_said(tmp_path, stage):
    environments = _orders_environments(tmp_path, {"broker": "paper", "symbols": "SPY"}, stage=stage)
    assert {v["ET_ORDERS_BROKER"] for v in environments.values()} == {"paper"}


def test_staging_and_prod_take_an_alpaca_broker_from_the_context(tmp_path):
    environments = _orders_environments(tmp_path, {"broker": "alpaca", "initial_equity": "25000", "symbols": "SPY"},
                                        stage="prod")
    assert {(v["ET_ORDERS_BROKER"], v["ET_ORDERS_ALPACA_PAPER"]) for v in environments.values()} == {("alpaca", "true")}



@pytest.mark.parametrize("stage", ["staging", "prod"])
@pytest.mark.parametrize("symbols", [None, "", "   "], ids=["no-symbols", "empty-symbols", "blank-symbols"])
def test_staging_and_prod_refuse_to_synthesise_without_explicit_symbols(tmp_path, stage, symbols):
    """The symbols live only in each deploy's context: with a SPY default, a redeploy of a stage
    trading SPY,QQQ that forgot ``-c symbols`` moved it to SPY alone (the regime refit fitted on SPY
    only, the orders functions' allocation raised from 1/2 to the whole account)."""
    from infra_cdk.app import InvalidContextError, build_app

    context = {"stage": stage, "broker": "paper"} | ({} if symbols is None else {"symbols": symbols})
    with pytest.raises(InvalidContextError) as refused:
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context=context)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"context symbols is required for stage '{stage}': give -c symbols=SPY,QQQ")
    assert "make deploy CDK_CONTEXT=" in message and f"{stage.upper()}_CDK_CONTEXT" in message
    assert "trading SPY alone" in message


@pytest.mark.parametrize("stage", ["staging", "prod"])
def test_staging_and_prod_trade_the_symbols_they_are_given(tmp_path, stage):
    environments = _orders_environments(tmp_path, {"broker": "paper", "symbols": "SPY,QQQ"}, stage=stage)
    assert {v["ET_ORDERS_DEFAULT_ALLOCATION"] for v in environments.values()} == {"0.5"}


def test_dev_still_defaults_to_trading_spy(tmp_path):
    environments = _orders_environments(tmp_path, {})
    assert {v["ET_ORDERS_DEFAULT_ALLOCATION"] for v in environments.values()} == {"1"}


def test_only_dev_defaults_its_context():
    assert [name for name, config in STAGES.items() if not config.explicit_context_required] == ["dev"]

def test_dev_still_defaults_to_the_paper_broker(tmp_path):
    environments = _orders_environments(tmp_path, {})
    assert {v["ET_ORDERS_BROKER"] for v in environments.values()} == {"paper"}


def test_the_app_reports_a_missing_broker_in_one_line_without_a_traceback(tmp_path):
    """`python -m infra_cdk.app` as the cdk CLI runs it (the context in CDK_CONTEXT_JSON; a process of
    its own, since the jsii runtime of this one has read its environment already)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CDK_CONTEXT_JSON": '{"stage": "prod"}', "CDK_OUTDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "infra_cdk.app"], cwd=Path(__file__).resolve().parents[2],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("infra_cdk: context broker is required for stage 'prod': give -c broker=")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("broker", ["alpaca", "alpaca-live"])
def test_an_alpaca_broker_needs_the_accounts_equity(tmp_path, broker):
    """The orders functions never ask the broker for the equity: without ``initial_equity`` an
    Alpaca account was traded as if it held the default $1,000,000."""
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match=rf"broker='{broker}'.*give -c initial_equity=N \(the Alpaca "
                                                  r"account's equity in dollars\).*default \$1,000,000"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path,
                  context={"broker": broker, "max_intent_age_seconds": "900"})


def test_live_trading_without_both_contexts_names_both(tmp_path):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match=r"max_intent_age_seconds=N.*; and -c initial_equity=N"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"broker": "alpaca-live"})


@pytest.mark.parametrize(
    ("broker", "value", "text"),
    [("alpaca", "25000", "25000"), ("alpaca-live", "1234567.89", "1234567.89"), ("paper", 50_000, "50000")],
)
def test_the_accounts_equity_reaches_every_orders_entry_exactly(tmp_path, monkeypatch, broker, value, text):
    """``-c initial_equity`` becomes ``ET_ORDERS_INITIAL_EQUITY`` of the orders, reconcile and
    kill-switch functions (each builds the router), and the settings read exactly that number."""
    from ensemble_trader.runtime.orders import OrdersSettings

    environments = _orders_environments(
        tmp_path, {"broker": broker, "max_intent_age_seconds": "900", "initial_equity": value}
    )
    for variables in environments.values():
        assert variables["ET_ORDERS_INITIAL_EQUITY"] == text
        monkeypatch.setenv("ET_ORDERS_INITIAL_EQUITY", variables["ET_ORDERS_INITIAL_EQUITY"])
        assert OrdersSettings().initial_equity == float(value)


def test_paper_trading_keeps_the_default_equity(tmp_path):
    environments = _orders_environments(tmp_path, {"broker": "paper"})
    assert all("ET_ORDERS_INITIAL_EQUITY" not in variables for variables in environments.values())


@pytest.mark.parametrize(("value", "problem"), [("0", "must be a positive number"), ("-25000", "must be a positive"),
                                                ("inf", "must be a positive"), ("nan", "must be a positive"),
                                                ("1e400", "must be a positive"), ("25k", "is not a number"),
                                                (True, "is not a number")])
def test_a_bad_initial_equity_is_refused(tmp_path, value, problem):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match=rf"context initial_equity={value!r} {problem}"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path,
                  context={"broker": "alpaca", "initial_equity": value})


def test_symbols_context_without_a_symbol_is_refused(tmp_path):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match="symbols names no symbol"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"symbols": " , "})


@pytest.mark.parametrize(
    ("symbols", "match"),
    [
        ("SPY,SPY", r"names \['SPY'\] more than once"),
        ("SPY,spy", r"\['spy'\] are not symbols"),
        (42, "must be a comma-separated string or a list of strings"),
    ],
)
def test_a_symbols_context_that_cannot_be_traded_as_given_is_refused(tmp_path, symbols, match):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match=match):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"symbols": symbols})


def test_a_symbols_context_may_be_a_list(tmp_path):
    from infra_cdk.app import build_app

    functions = tmp_path / "functions"
    (functions / "regime").mkdir(parents=True)
    for file in ("handler.py", "refit.py"):
        (functions / "regime" / file).write_text("def lambda_handler(event, context):\n    return event\n")
    app, stack = build_app(outdir=str(tmp_path / "out"), functions_dir=functions,
                           context={"symbols": ["SPY", "QQQ"]})
    template = app.synth().get_stack_by_name(stack.stack_name).template
    refit = [r["Properties"]["Environment"]["Variables"]["ET_REGIME_SYMBOLS"] for r in template["Resources"].values()
             if r["Type"] == "AWS::Lambda::Function"
             and "ET_REGIME_SYMBOLS" in r["Properties"].get("Environment", {}).get("Variables", {})]
    assert refit == ["SPY,QQQ"]


def test_training_image_tag_defaults_to_the_package_version(tmp_path):
    import json

    from ensemble_trader import __version__

    from infra_cdk.app import build_app

    app, stack = build_app(outdir=str(tmp_path), functions_dir=tmp_path)
    template = json.dumps(app.synth().get_stack_by_name(stack.stack_name).template)
    assert f":{__version__}" in template and ":latest" not in template


@pytest.mark.parametrize("value", ["soon", "-5", "0", "inf"])
def test_a_bad_max_intent_age_is_refused(tmp_path, value):
    from infra_cdk.app import InvalidContextError, build_app

    with pytest.raises(InvalidContextError, match="max_intent_age_seconds"):
        build_app(outdir=str(tmp_path), functions_dir=tmp_path, context={"max_intent_age_seconds": value})


@pytest.mark.parametrize(("value", "text"), [(900, "900"), (1_234_567.0, "1234567"), (0.25, "0.25"),
                                             (1e-7, "1e-07"), (86_400.5, "86400.5")])
def test_numbers_reach_the_functions_environment_exactly(value, text):
    assert env_number(value) == text and float(text) == value
