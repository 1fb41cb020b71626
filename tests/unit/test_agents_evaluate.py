"""Specialty checks of the evaluation suite on hand-made reports."""

from __future__ import annotations

from ensemble_trader.backtest.metrics import METRIC_NAMES

from training.agents.evaluate import specialty_checks


def m(**kw) -> dict[str, float]:
    out = dict.fromkeys(METRIC_NAMES, 0.0)
    out.update(kw)
    return out


def block(overall: dict, **regimes: dict) -> dict:
    return {"overall": overall, "by_regime": regimes}


def report(agents: dict, hold: dict) -> dict:
    return {"agents": agents, "baselines": {"buy_and_hold": hold, "cash": block(m())}}


HOLD = block(
    m(sharpe=0.5, total_return=0.2),
    BULL=m(total_return=0.3),
    BEAR=m(max_drawdown=0.3),
    SIDEWAYS=m(total_return=0.0),
    VOLATILE=m(max_drawdown=0.25),
)


def test_every_specialty_passes():
    agents = {
        "conservative": block(m(total_return=0.05), BEAR=m(max_drawdown=0.1), VOLATILE=m(max_drawdown=0.1)),
        "aggressive": block(m(), BULL=m(total_return=0.5)),
        "balanced": block(m(sharpe=0.8)),
        "contrarian": block(m(), SIDEWAYS=m(total_return=0.04)),
    }
    checks = specialty_checks(report(agents, HOLD))
    assert {k: v["passed"] for k, v in checks.items()} == dict.fromkeys(agents, True)


def test_doing_nothing_does_not_pass():
    flat = block(m(), BULL=m(), BEAR=m(), SIDEWAYS=m(), VOLATILE=m())
    agents = {n: flat for n in ("conservative", "aggressive", "balanced", "contrarian")}
    checks = specialty_checks(report(agents, HOLD))
    assert {k: v["passed"] for k, v in checks.items()} == dict.fromkeys(agents, False)


def test_missing_regime_is_not_judged():
    agents = {"aggressive": block(m()), "conservative": block(m(total_return=0.1), BEAR=m(max_drawdown=0.1))}
    checks = specialty_checks(report(agents, block(m(), BEAR=m(max_drawdown=0.3))))
    assert checks["aggressive"]["passed"] is None
    assert checks["conservative"]["passed"] is None
    assert "n/a" in checks["conservative"]["detail"]
