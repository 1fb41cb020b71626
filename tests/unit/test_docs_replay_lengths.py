"""Documented replays and backtests of synthetic bars are long enough to trade: a spec
``synth:<scenario>:<seed>:<bars>`` in README.md or docs/ whose bars all fall inside the features'
warm-up makes every intent "warming up, going flat" (no order, no regret), silently."""

from __future__ import annotations

import re
from pathlib import Path

from ensemble_trader.domain.features import WARMUP_BARS

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"ensemble-trader (feed replay|backtest|demo|evaluate agents)\b[^\n]*")
SPEC = re.compile(r"synth:[a-z_]+:\d+:(\d+)")


def documented_commands() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [(f.name, m.group(0)) for f in files for m in COMMAND.finditer(f.read_text(encoding="utf-8"))]


def test_the_docs_show_such_commands():
    assert any("feed replay" in command for _, command in documented_commands())


def test_every_documented_synthetic_spec_outlasts_the_feature_warm_up():
    short = [
        (name, command) for name, command in documented_commands()
        for bars in SPEC.findall(command) if int(bars) <= WARMUP_BARS
    ]
    assert short == [], f"these commands give no ready bar (warm-up {WARMUP_BARS} bars): {short}"
